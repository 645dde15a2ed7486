"""The channels of a data set's images: the count most images have, colour images of three equal channels (a grey
picture saved as RGB) read as grey among grey images, and the images whose channels keep them from training with the
others."""

import pandas as pd


def greyed(rows: list[dict]) -> list[dict]:
    """The manifest rows, colour images whose three channels are equal (`grey_colour`) read as grey (input_channels 1,
    read_as_grey) in a data set of grey images: most of them grey or such, some of them stored grey (a data set of
    such images only stays colour)."""
    grey = [row["channels"] == 1 for row in rows]
    if not any(grey) or sum(g or bool(row.get("grey_colour")) for g, row in zip(grey, rows)) <= len(rows) / 2:
        return rows
    return [dict(row, input_channels=1, read_as_grey=True) if row.get("grey_colour") and row["kind"] != "volume"
            else row for row in rows]  # a volume's channels are modalities


def channel_problems(rows: list[dict], converted: int | None) -> list[str]:
    """Without data.channels every image must have the channel count of the majority (input_channels: a grey picture
    saved as RGB counts as grey, `greyed`); with it, preprocessing converts each 2D image to that count, and volumes
    of several channels (modalities, not colours) are refused."""
    if converted:
        return [f"{row['image_path']}: a volume of {row['channels']} channels (modalities); data.channels converts "
                f"grey and colour images only: unset it" for row in rows if row["kind"] == "volume" and
                row["channels"] > 1]
    counts = pd.Series([r["input_channels"] for r in rows], dtype=int)
    expected = int(counts.mode()[0]) if len(counts) else 0
    seen, problems, usual = set(), [], f"{int((counts == expected).sum())} of {len(counts)}"
    for row in rows:
        if row["input_channels"] != expected and row["image_path"] not in seen:
            seen.add(row["image_path"])
            if row["kind"] == "volume":
                fix = "every volume needs the same channels (modalities along the 4th axis), in one order"
            elif {row["channels"], expected} <= {1, 3}:
                fix = "convert it, or set data.channels to 1 (colour images become grey) or 3 (grey images are " \
                      "repeated into RGB)"
            else:  # fluorescence channels (ImageJ, OME): no colour conversion
                fix = "every image needs the same channels (e.g. nuclei and membranes), in one order; export it so"
            problems.append(f"{row['image_path']}: {row['channels']} channel(s) where {usual} of the data set's "
                            f"images have {expected}; {fix}")
    return problems
