#!/usr/bin/env python
"""Build ``examples/sample-corpus/``: a small, redistributable multimodal corpus for demos and tests.

Contents (every run produces the same files):

* ``emoji/<unicode_name>.png`` — ~200 Noto Color Emoji (SIL OFL 1.1) rendered at 96 px on white, a diverse
  fixed subset (fruit, food, animals, plants, weather, vehicles, sport, objects, places);
* ``photos/*.jpg`` — scikit-image sample photos (public domain / CC0), re-encoded at most 400 px;
  ``coffee`` and ``rocket`` carry ``.txt`` sidecars, making them image+text documents;
* ``texts/*.txt`` — short descriptive paragraphs written for this corpus (CC0);
* ``LICENSES.md`` — every source and its licence.

Usage::

    python scripts/make_sample_corpus.py [--out examples/sample-corpus] [--cache ~/.cache/omniret/debian]

Needs apt-get + dpkg (for the font) and pip (for the scikit-image wheel, read as a zip; nothing installed).
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from omniret.data.builders.debian import default_cache_dir  # noqa: E402
from omniret.data.builders.emoji import emoji_font_path, list_emoji, render_emoji  # noqa: E402
from omniret.images import to_rgb  # noqa: E402

SKIMAGE_SPEC = "scikit-image==0.26.0"
PHOTO_MAX_SIDE = 400

# ------------------------------------------------------------------------------------------ content
# A diverse, fixed emoji subset, grouped by theme. Names are lower-case Unicode names (Python's database).
EMOJI: list[str] = [
    # fruit
    "red apple", "green apple", "pear", "peach", "cherries", "strawberry", "grapes", "melon", "watermelon",
    "tangerine", "lemon", "banana", "pineapple", "mango", "kiwifruit", "coconut", "avocado", "tomato",
    # vegetables
    "aubergine", "carrot", "ear of maize", "hot pepper", "cucumber", "broccoli", "potato", "garlic", "onion",
    "mushroom", "leafy green", "peanuts",
    # food
    "bread", "croissant", "baguette bread", "pretzel", "bagel", "pancakes", "waffle", "cheese wedge", "egg",
    "bacon", "hamburger", "french fries", "slice of pizza", "hot dog", "sandwich", "taco", "burrito",
    "green salad", "spaghetti", "sushi", "steaming bowl", "cooked rice", "dumpling", "doughnut", "cookie",
    "birthday cake", "shortcake", "cupcake", "ice cream", "soft ice cream", "chocolate bar", "lollipop",
    "popcorn", "honey pot",
    # drinks
    "hot beverage", "teacup without handle", "glass of milk", "wine glass", "beer mug", "cocktail glass",
    "tropical drink", "cup with straw", "bubble tea",
    # animals
    "cat", "dog", "mouse", "rabbit", "cow", "pig", "horse", "sheep", "goat", "chicken", "rooster", "duck",
    "swan", "eagle", "owl", "parrot", "penguin", "flamingo", "peacock", "elephant", "giraffe face",
    "zebra face", "lion face", "tiger", "leopard", "monkey", "gorilla", "bear face", "panda face", "koala",
    "kangaroo", "dromedary camel", "llama", "hedgehog", "bat", "fox face", "wolf face", "deer", "rhinoceros",
    "hippopotamus", "crocodile", "turtle", "lizard", "snake", "frog face", "whale", "dolphin", "shark",
    "tropical fish", "blowfish", "octopus", "squid", "crab", "lobster", "shrimp", "snail", "butterfly",
    "honeybee", "lady beetle", "ant", "spider", "scorpion", "t-rex", "sauropod", "unicorn face",
    # plants
    "sunflower", "rose", "tulip", "cherry blossom", "cactus", "palm tree", "evergreen tree", "deciduous tree",
    "four leaf clover", "maple leaf", "seedling", "potted plant",
    # weather and sky
    "black sun with rays", "cloud", "umbrella with rain drops", "snowman", "high voltage sign", "snowflake",
    "rainbow", "cloud with rain", "cloud with snow", "cloud with lightning", "cloud with tornado", "fog",
    "cyclone", "water wave", "crescent moon", "full moon symbol", "glowing star", "shooting star", "comet",
    "volcano", "fire", "droplet", "thermometer",
    # vehicles
    "rocket", "helicopter", "airplane", "small airplane", "steam locomotive", "high-speed train", "tram",
    "bus", "ambulance", "fire engine", "police car", "taxi", "automobile", "delivery truck", "tractor",
    "racing car", "racing motorcycle", "bicycle", "motor scooter", "skateboard", "ship", "sailboat",
    "speedboat", "canoe", "satellite", "flying saucer",
    # sport and games
    "soccer ball", "baseball", "basketball and hoop", "american football", "tennis racquet and ball",
    "volleyball", "bowling", "trophy", "boxing glove", "ski and ski boot", "ice skate", "game die",
    # objects and music
    "guitar", "violin", "trumpet", "saxophone", "drum with drumsticks", "musical keyboard", "microphone",
    "headphone", "camera", "television", "personal computer", "mobile phone", "black telephone",
    "alarm clock", "hourglass", "electric light bulb", "books", "black scissors", "pencil", "hammer",
    "wrench", "key", "lock", "bell", "umbrella", "balloon", "wrapped present", "teddy bear", "magnet",
    "compass", "microscope", "telescope", "anchor",
    # clothing
    "t-shirt", "jeans", "dress", "necktie", "crown", "eyeglasses", "top hat", "athletic shoe",
    "high-heeled shoe", "gloves",
    # places
    "house building", "office building", "hospital", "school", "european castle", "stadium",
    "statue of liberty", "mount fuji", "tent", "ferris wheel",
    # faces and hearts
    "grinning face", "face with tears of joy", "crying face", "sleeping face", "robot face", "ghost",
    "skull", "heavy black heart",
]

# scikit-image sample file -> output stem (licences in LICENSES_MD)
PHOTOS: dict[str, str] = {
    "astronaut.png": "astronaut",
    "chelsea.png": "chelsea_the_cat",
    "coffee.png": "coffee",
    "rocket.jpg": "rocket_launch",
    "hubble_deep_field.jpg": "hubble_deep_field",
    "camera.png": "cameraman",
}

# image+text documents: the photo's stem -> its caption sidecar
SIDECARS: dict[str, str] = {
    "coffee": "A cup of espresso on a saucer with a spoon, served on a wooden café table.",
    "rocket_launch": "A Falcon 9 rocket lifts off from Cape Canaveral, carrying the DSCOVR satellite into space.",
}

TEXTS: dict[str, str] = {
    "apples": """Apples are the round fruit of the apple tree, grown in orchards across temperate regions.
        Their skin ranges from green to deep red, and the crisp flesh is eaten raw, baked into pies or pressed
        into juice and cider.""",
    "domestic_cat": """The domestic cat is a small carnivorous mammal kept as a pet for thousands of years.
        Cats are agile hunters with sharp claws, whiskers and keen night vision, and they spend much of the
        day sleeping.""",
    "rocket_launch": """A rocket launch sends a vehicle from the launch pad into space. Engines burn fuel and
        oxidiser to produce thrust, and stages fall away as the rocket climbs, until the payload reaches
        orbit.""",
    "espresso": """Espresso is a concentrated coffee made by forcing hot water through finely ground coffee
        beans under pressure. It is served in small cups and forms the base of cappuccino and latte.""",
    "bicycles": """A bicycle is a two-wheeled vehicle driven by pedals and a chain. It is a cheap, quiet and
        healthy way to commute, and racing cyclists reach speeds above fifty kilometres per hour.""",
    "thunderstorms": """A thunderstorm is a storm with lightning and thunder, usually with heavy rain, strong
        gusts and sometimes hail. It forms when warm, moist air rises quickly into tall cumulonimbus
        clouds.""",
    "dogs": """Dogs were the first animals domesticated by humans. They are loyal companions that herd
        sheep, guide blind people, sniff out explosives and love to fetch a ball in the park.""",
    "pizza": """Pizza is a flat round bread from Naples topped with tomato sauce and mozzarella cheese and
        baked in a very hot oven. Popular toppings include basil, mushrooms, olives and pepperoni.""",
    "bananas": """Bananas are long curved tropical fruits with a yellow peel and soft sweet flesh. They grow
        in hanging bunches on large herbaceous plants and are rich in potassium.""",
    "the_moon": """The Moon is Earth's only natural satellite. Its phases, from new moon to full moon, follow
        a cycle of about twenty-nine days, and its gravity drives the ocean tides.""",
    "steam_trains": """Steam locomotives pulled the first railway trains. Coal burned in a firebox boils
        water, and the steam drives pistons that turn the wheels, leaving a trail of smoke behind.""",
    "sunflowers": """Sunflowers are tall plants with large yellow flower heads that follow the sun when young.
        Their seeds are eaten as a snack and pressed to make cooking oil.""",
    "octopus": """The octopus is a soft-bodied sea animal with eight arms lined with suckers. It is clever,
        changes colour to hide from predators and squirts ink when it is threatened.""",
    "guitars": """The guitar is a string instrument played by strumming or plucking six strings. Acoustic
        guitars have a hollow wooden body, while electric guitars need an amplifier.""",
    "football": """Football, or soccer, is played by two teams of eleven who try to kick the ball into the
        opposing goal. It is the most popular sport in the world, and the World Cup is held every four
        years.""",
    "honeybees": """Honeybees live in colonies ruled by a single queen. Worker bees collect nectar and pollen
        from flowers, pollinating crops, and turn the nectar into honey stored in wax combs.""",
    "volcanoes": """A volcano is an opening in the Earth's crust where molten rock, ash and gases escape.
        Eruptions can build tall mountains, and lava flows glow red as they cool into black rock.""",
    "penguins": """Penguins are flightless seabirds of the southern hemisphere. They waddle on land but swim
        fast underwater using their wings as flippers, hunting fish and krill in cold seas.""",
}

LICENSES_MD = """
# Sample corpus: sources and licences

Built by `scripts/make_sample_corpus.py`; re-run it to regenerate every file here.

| files | source | licence |
|---|---|---|
| `emoji/*.png` | Noto Color Emoji, rendered with Pillow from Debian package `fonts-noto-color-emoji` (2.042) | SIL Open Font License 1.1 (Google Inc.) |
| `photos/astronaut.jpg` | scikit-image `data/astronaut.png`: Eileen Collins, NASA Great Images database | public domain (NASA) |
| `photos/chelsea_the_cat.jpg` | scikit-image `data/chelsea.png`, photograph by Stefan van der Walt | CC0 |
| `photos/coffee.jpg` | scikit-image `data/coffee.png`, photograph by Rachel Michetti (Pikolo Espresso Bar) | CC0 |
| `photos/rocket_launch.jpg` | scikit-image `data/rocket.jpg`: DSCOVR on Falcon 9, SpaceX photos | public domain (released by SpaceX) |
| `photos/hubble_deep_field.jpg` | scikit-image `data/hubble_deep_field.jpg`, NASA / HubbleSite | public domain (NASA) |
| `photos/cameraman.jpg` | scikit-image `data/camera.png`, photograph by Lav Varshney | CC0 |
| `photos/*.txt`, `texts/*.txt` | written for omniret | CC0 |

Photos are resized to at most 400 px and re-encoded as JPEG. Licence statements for the scikit-image files
are the ones in scikit-image 0.26's `skimage/data/_fetchers.py` docstrings. The emoji glyph images are
derived from the font, which the OFL permits when not sold on their own; the font name is not reused.
"""


def write_emoji(out: Path, cache: Path, size: int) -> int:
    font = emoji_font_path(cache)
    by_name = {name: cp for cp, name in list_emoji(font)}
    missing = [n for n in EMOJI if n not in by_name]
    if missing:
        raise SystemExit(f"emoji missing from the font / Unicode database: {missing}")
    (out / "emoji").mkdir(parents=True)
    for name in EMOJI:
        img = render_emoji(by_name[name], font, size=size, background="white")
        if img is None:
            raise SystemExit(f"emoji {name!r} rendered empty")
        img.save(out / "emoji" / f"{name.replace(' ', '_')}.png", optimize=True)
    return len(EMOJI)


def _skimage_wheel(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", SKIMAGE_SPEC, "-d", str(tmp)]
    subprocess.run(cmd, check=True, capture_output=True)
    wheels = sorted(tmp.glob("scikit_image-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {SKIMAGE_SPEC} produced no wheel")
    return wheels[0]


def write_photos(out: Path, wheel: Path | None) -> int:
    (out / "photos").mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        whl = wheel or _skimage_wheel(Path(tmp))
        with zipfile.ZipFile(whl) as zf:
            for src, stem in PHOTOS.items():
                img = to_rgb(Image.open(io.BytesIO(zf.read(f"skimage/data/{src}"))))
                img.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.Resampling.LANCZOS)
                img.save(out / "photos" / f"{stem}.jpg", quality=88, optimize=True)
    for stem, text in SIDECARS.items():
        (out / "photos" / f"{stem}.txt").write_text(text.strip() + "\n", encoding="utf-8")
    return len(PHOTOS)


def write_texts(out: Path) -> int:
    (out / "texts").mkdir(parents=True)
    for stem, text in TEXTS.items():
        (out / "texts" / f"{stem}.txt").write_text(" ".join(text.split()) + "\n", encoding="utf-8")
    return len(TEXTS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "examples" / "sample-corpus")
    ap.add_argument("--cache", type=Path, default=default_cache_dir(), help="Debian package cache")
    ap.add_argument("--skimage-wheel", type=Path, default=None, help="a local scikit-image wheel (else pip download)")
    ap.add_argument("--size", type=int, default=96, help="emoji side in pixels")
    args = ap.parse_args()
    # build beside the target, then swap: a re-run never leaves stale files behind, and the folder is
    # never seen half-written (e.g. by someone indexing or committing it meanwhile)
    out = args.out.resolve()
    tmp = out.with_name(f".{out.name}.building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n_e = write_emoji(tmp, args.cache, args.size)
    n_p = write_photos(tmp, args.skimage_wheel)
    n_t = write_texts(tmp)
    (tmp / "LICENSES.md").write_text(LICENSES_MD.lstrip(), encoding="utf-8")
    total = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.exists():
        shutil.rmtree(old)
    print(f"{args.out}: {n_e} emoji, {n_p} photos ({len(SIDECARS)} with sidecars), {n_t} texts, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
