"""What the built-in corpus's generators share: padding text to a length, and original names."""

from __future__ import annotations

import random
from collections.abc import Callable

MIN_CHARS = 200
MAX_CHARS = 2000


def fill(rng: random.Random, parts: Callable[[], str], sep: str = " ") -> str:
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


def person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"
