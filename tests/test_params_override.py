import shutil

import pytest
import yaml

from facelandmarks.params_override import apply_overrides, parse_override


def test_parse_override():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("model.head=heatmap") == (["model", "head"], "heatmap")
    with pytest.raises(ValueError, match="key=value"):
        parse_override("train.epochs")


def test_apply_overrides_keeps_comments(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy("params.yaml", p)
    apply_overrides(p, ["seed=7", "download.datasets.0.max_photos=5", "download.splits.val=0.2"])
    data = yaml.safe_load(p.read_text())
    assert data["seed"] == 7 and data["download"]["datasets"][0]["max_photos"] == 5
    assert data["download"]["splits"]["val"] == 0.2
    assert "# Every knob of every stage" in p.read_text()
    with pytest.raises(KeyError, match="nope"):
        apply_overrides(p, ["nope.x=1"])


def test_cli_stage_modules_are_the_pipelines_entry_points():
    """`facelandmarks stage NAME` runs exactly what `pipelines/NAME.py` (DVC's cmd) runs."""
    import importlib
    import re
    from pathlib import Path

    from facelandmarks.cli import STAGES

    for name, module in STAGES.items():
        script = Path("pipelines", f"{name}.py").read_text()
        imported = re.search(r"from (facelandmarks\.[\w.]+) import main", script).group(1)
        assert imported == module, name
        assert callable(importlib.import_module(module).main)


def test_overrides_applied_again_to_an_overridden_file_keep_it_valid(tmp_path):
    # a list value written by one override and replaced by the next used to take the following line with it
    # (ruamel block style: "flip: 0.5 rotate_deg: 25"); lists and maps are now written in flow style
    p = tmp_path / "params.yaml"
    shutil.copy("params.yaml", p)
    original = yaml.safe_load(p.read_text())
    apply_overrides(p, ["finetune.wise_ft.alphas=[0.5, 0.6]", "finetune.mix={300w: 2.0}"])
    apply_overrides(p, ["finetune.wise_ft.alphas=[]", "finetune.mix={300w: 1.0}", "finetune.mix.300w=3.0"])
    text = p.read_text()
    data = yaml.safe_load(text)
    assert data["finetune"]["wise_ft"]["alphas"] == [] and data["finetune"]["mix"] == {"300w": 3.0}
    assert data["finetune"]["online_augment"] == original["finetune"]["online_augment"]
    assert {k: v for k, v in data.items() if k != "finetune"} == {k: v for k, v in original.items() if k != "finetune"}
    assert "alphas: []" in text and "# WiSE-FT" in text  # flow style, comments kept
