"""What infer keeps of what it wrote (unetflow.infer.ledger): a slide's outputs stay while its file exists, and an
image of another folder does not silently replace the mask of an earlier run's image of the same name."""

import json

import pandas as pd

from unetflow.infer.ledger import forget_gone_slides, overwrite_problems, record_claims


def test_the_outputs_of_a_slide_stay_while_its_file_exists_and_go_with_it(tmp_path):
    ledger, outputs = tmp_path / "written.json", {}
    for name in ("a", "b"):
        (tmp_path / f"{name}.svs").write_bytes(b"slide")
        outputs[name] = dict(image=str(tmp_path / f"{name}.svs"), outputs=[str(tmp_path / "masks" / f"{name}.tif")])
        (tmp_path / "masks").mkdir(exist_ok=True)
        (tmp_path / "masks" / f"{name}.tif").write_bytes(b"labels")
    assert forget_gone_slides(ledger, outputs) == []
    assert forget_gone_slides(ledger, {"b": outputs["b"]}) == []  # infer.images lists another folder now
    assert (tmp_path / "masks" / "a.tif").exists()
    (tmp_path / "a.svs").unlink()
    assert forget_gone_slides(ledger, {}) == [str(tmp_path / "masks" / "a.tif")]  # a's file is gone: its outputs too
    assert json.loads(ledger.read_text()) == {"b": outputs["b"]} and (tmp_path / "masks" / "b.tif").exists()


def test_an_image_of_another_folder_may_not_replace_the_mask_of_an_image_of_its_name(tmp_path):
    out = tmp_path / "results/infer/unet"
    (out / "masks").mkdir(parents=True)
    for folder in ("week1", "week2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "img001.png").write_bytes(b"image")
    first = pd.DataFrame({"id": ["img001"], "image_path": [str(tmp_path / "week1/img001.png")]})
    assert overwrite_problems(first, out) == []
    record_claims(first, out)
    (out / "masks" / "img001.png").write_bytes(b"mask")
    again = first.assign(image_path=str(tmp_path / "week1/../week1/img001.png"))  # the same image, written otherwise
    assert overwrite_problems(again, out) == []
    second = first.assign(image_path=str(tmp_path / "week2/img001.png"))
    problems, earlier = overwrite_problems(second, out), tmp_path / "week1/img001.png"
    assert len(problems) == 1 and problems[0].startswith(
        f"{out / 'masks/img001.png'}: the mask of {earlier}, which {second['image_path'][0]} would replace")
    (out / "masks" / "img001.png").unlink()  # the earlier masks moved away: nothing to replace
    assert overwrite_problems(second, out) == []
