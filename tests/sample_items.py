"""Sample-corpus items that exercise every input shape: text, image, image+text, each with and without an
instruction (shared by the tests of encoders built on the bundled towers)."""

from pathlib import Path

from omniret.types import Item

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "sample-corpus"
APPLE, CAT = CORPUS / "emoji" / "red_apple.png", CORPUS / "photos" / "chelsea_the_cat.jpg"
INST = "Retrieve an image that matches the given caption."
ITEMS = [Item("a red apple"), Item(image=APPLE), Item("a cat on a sofa", image=CAT),
         Item("a red apple", instruction=INST), Item(image=CAT, instruction=INST),
         Item("a cat", image=APPLE, instruction=INST)]
