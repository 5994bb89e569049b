"""A generated listing table whose label needs the text and a price x category interaction.

Each row is a product photo (a coloured shape that says nothing of the label), a title, a
price, a brand and a condition. The label is "good", "mixed" or "bad": the title's word says
+1, 0 or -1, and the price says +1 or -1 with a sign that depends on the brand (a high price
is good for premium brands, bad for budget ones). Neither the text nor the columns alone can
reach the label; a linear model on the columns cannot draw the interaction. Cells are
missing as they are in real listings (prices 10 %, brands 5 %, conditions 20 %).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PREMIUM, BUDGET = ["aurora", "belmont", "castell"], ["dido", "eagle", "fenwick", "gala"]
WORDS = {1: ["excellent", "superb", "flawless", "great"], 0: ["ordinary", "plain", "standard"],
         -1: ["faulty", "scratched", "broken", "poor"]}
NOUNS = ["lamp", "chair", "kettle", "radio", "desk", "camera", "bicycle", "clock"]
COLOURS = [(200, 40, 40), (40, 160, 40), (40, 40, 200), (200, 160, 40)]


def listing_table(folder: Path, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` rows; photos drawn into ``folder/photos`` (paths relative to ``folder``)."""
    rng = np.random.default_rng(seed)
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(COLOURS):
        path = folder / "photos" / f"{i}.png"
        if not path.exists():
            image = Image.new("RGB", (48, 48), "white")
            image.paste(colour, (8 + 4 * i, 8, 40, 40 - 4 * i))
            image.save(path)
    rows = []
    for _ in range(n):
        brand = str(rng.choice(PREMIUM + BUDGET))
        price = float(np.exp(rng.normal(4.0, 0.8)))
        text_sign = int(rng.choice([-1, 0, 1]))
        price_sign = (1 if price > np.exp(4.0) else -1) * (1 if brand in PREMIUM else -1)
        total = text_sign + price_sign + rng.normal(0, 0.3)
        label = "good" if total >= 1 else "bad" if total <= -1 else "mixed"
        rows.append({
            "photo": f"photos/{rng.integers(len(COLOURS))}.png",
            "title": f"{rng.choice(WORDS[text_sign])} {rng.choice(NOUNS)} for sale",
            "price": "" if rng.random() < 0.1 else f"{price:.2f}",
            "brand": "" if rng.random() < 0.05 else brand,
            "condition": "" if rng.random() < 0.2 else str(rng.choice(["new", "used"])),
            "label": label})
    return pd.DataFrame(rows)
