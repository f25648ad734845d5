"""Atomic outputs (facelandmarks.fsutil): a writer killed with SIGKILL leaves its temporary behind; the next
write of the same output removes it, never a live writer's temporary nor another output's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from facelandmarks.fsutil import (
    atomic_dir,
    atomic_path,
    remove_stale_temporaries,
    stale_temporaries,
    write_json,
)


def _python(code: str, cwd: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, text=True, **kw)


def _killed_writer(cwd: Path, code: str) -> None:
    """Run ``code`` in a fresh interpreter that SIGKILLs itself inside the atomic write (after the write
    started, before it finished); assert that it died by SIGKILL."""
    proc = _python(code + "\n", cwd)
    assert proc.wait(timeout=120) == -signal.SIGKILL


def test_a_killed_folder_write_is_cleaned_by_the_next_write(tmp_path):
    out = tmp_path / "processed" / "augmented"
    _killed_writer(tmp_path, f"""
        import os, signal
        from facelandmarks.fsutil import atomic_dir
        with atomic_dir({str(out)!r}) as tmp:
            (tmp / "face_v0.png").write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    [left] = [p for p in out.parent.iterdir()]
    assert left.name.startswith(".augmented.") and left.name.endswith(".tmp") and (left / "face_v0.png").is_file()
    assert not out.exists()
    # unrelated files beside it: another output's temporary-like name and a user's file stay
    other = out.parent / ".augmented_old_run.tmp"
    other.mkdir()
    (out.parent / "augmented.parquet").write_bytes(b"x")
    assert stale_temporaries(out) == [left]

    with atomic_dir(out) as tmp:
        (tmp / "face_v0.png").write_bytes(b"whole")
    assert not left.exists() and (out / "face_v0.png").read_bytes() == b"whole"
    assert sorted(p.name for p in out.parent.iterdir()) == [".augmented_old_run.tmp", "augmented", "augmented.parquet"]


def test_a_killed_file_write_is_cleaned_and_other_outputs_are_not(tmp_path):
    reports = tmp_path / "reports"
    _killed_writer(tmp_path, f"""
        import os, signal
        from facelandmarks.fsutil import atomic_path
        with atomic_path({str(reports / "metrics.md")!r}) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    _killed_writer(tmp_path, f"""
        import os, signal
        from facelandmarks.fsutil import atomic_path
        with atomic_path({str(reports / "metrics.json")!r}) as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    md_tmp = [p for p in reports.iterdir() if p.name.endswith(".tmp.md")]
    json_tmp = [p for p in reports.iterdir() if p.name.endswith(".tmp.json")]
    assert len(md_tmp) == 1 and len(json_tmp) == 1 and md_tmp[0].name.startswith(".metrics.")

    write_json(reports / "metrics.json", {"nme": 0.1})
    assert not json_tmp[0].exists() and md_tmp[0].exists()  # only the temporaries of the output written
    assert json.loads((reports / "metrics.json").read_text()) == {"nme": 0.1}
    assert remove_stale_temporaries(reports / "metrics.md") == md_tmp
    assert sorted(p.name for p in reports.iterdir()) == ["metrics.json"]


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    out = tmp_path / "crops"
    proc = _python(f"""
        import sys
        from facelandmarks.fsutil import atomic_dir
        with atomic_dir({str(out)!r}) as tmp:
            (tmp / "a.png").write_bytes(b"a")
            print(tmp, flush=True)
            sys.stdin.readline()      # hold the write open until the test says so
    """, tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        live = Path(proc.stdout.readline().strip())
        assert live.is_dir()
        assert stale_temporaries(out) == []
        with atomic_dir(out) as tmp:  # a second writer of the same output does not delete the first's work
            (tmp / "b.png").write_bytes(b"b")
        assert live.is_dir() and (live / "a.png").is_file()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not live.exists() and sorted(p.name for p in (out).iterdir()) == ["a.png"]  # the last rename wins
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failed_write_leaves_nothing(tmp_path):
    out = tmp_path / "x" / "table.parquet"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(out.parent.iterdir()) == []


@pytest.mark.needs_data
@pytest.mark.slow
def test_the_augment_stage_killed_then_rerun(small_crops, tmp_path):
    """The real augment stage, SIGKILLed while writing its images, leaves ``.augmented.<random>.tmp``;
    its next run removes it and writes the complete output."""
    from facelandmarks.data.table import write_table

    crops, _, _ = small_crops
    write_table(crops, tmp_path / "crops.parquet")
    params = {
        "seed": 1,
        "tracking": {"experiment": "fsutil-test", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                     "artifact_location": str(tmp_path / "mlartifacts")},
        "augment": {"variants": 1, "crops": str(tmp_path / "crops.parquet"),
                    "out_dir": "data/processed/augmented", "table": "data/processed/augmented.parquet",
                    "report": "reports/augment.json",
                    "preview": {"faces": 2, "out": "reports/figures/augment_preview.png"}},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env_code = """
        import os
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.environ.pop("FACELANDMARKS_PARENT_RUN_ID", None)
        import facelandmarks.augment.stage as stage
    """
    _killed_writer(tmp_path, env_code + """
        import signal
        real, written = stage.write_image, []
        def write_then_die(*a, **k):   # SIGKILL the stage after its third image: a real kill, at a fixed point
            real(*a, **k)
            written.append(1)
            if len(written) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        stage.write_image = write_then_die
        stage.main("params.yaml")
    """)
    processed = tmp_path / "data" / "processed"
    [left] = processed.iterdir()
    assert left.name.startswith(".augmented.") and left.name.endswith(".tmp") and len(list(left.rglob("*.png"))) == 3

    proc = _python(env_code + '\n        stage.main("params.yaml")\n', tmp_path)
    assert proc.wait(timeout=300) == 0
    assert sorted(p.name for p in processed.iterdir()) == ["augmented", "augmented.parquet"]
    report = json.loads((tmp_path / "reports" / "augment.json").read_text())
    assert len(list((processed / "augmented").rglob("*.png"))) == report["rows"] > 3
