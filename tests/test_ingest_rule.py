"""The ingest rule's log: notes on files it does not read, and the warnings about the files it checked beside the
problems that stop it, so one round of fixes sees everything."""

import cv2
import numpy as np

from conftest import snakemake, tiny_config, write_config, write_pairs


def test_a_refused_data_set_logs_the_warnings_of_its_checked_files_and_its_unread_subfolders(tmp_path):
    images, masks = write_pairs(tmp_path / "data", count=6, size=(32, 40))
    cv2.imwrite(str(masks / "c1.png"), np.zeros((32, 40), np.uint8))  # a warning: no foreground
    cv2.imwrite(str(masks / "c2.png"), np.zeros((30, 40), np.uint8) + 255)  # a problem: not the image's size
    (images / "old").mkdir()
    cv2.imwrite(str(images / "old" / "c9.png"), np.zeros((32, 40), np.uint8))
    config = tiny_config()
    config.pop("demo")
    config["data"] = {"images": str(images), "masks": str(masks)}
    result = snakemake(tmp_path, "--until", "ingest", configfile=write_config(tmp_path, config), check=False)
    log = (tmp_path / "results" / "logs" / "ingest.log").read_text()
    assert result.returncode != 0 and "1 problem(s) in the data set" in log and "c2.png" in log
    assert "1 mask(s) with no foreground, background only (e.g. masks/c1.png)" in log
    assert f"1 image file(s) in subfolders of {images} are not read (a folder names its direct children only): " \
           "old (1)" in log
