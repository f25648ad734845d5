"""Benchmark report writer: results.json / results.md and ONLY the marked README block."""

from __future__ import annotations

import json

import pytest

from benchmarks.report import (
    END_MARKER,
    START_MARKER,
    evaluate_targets,
    merge_results,
    render_readme_block,
    replace_marked_block,
    write_report,
)


def _summary(nme: float) -> dict:
    return {"faces": 10, "nme": nme, "nme_median": nme * 0.9, "fr@0.08": 0.1, "auc@0.08": 0.5, "fr@0.10": 0.05,
            "auc@0.10": 0.6}


def _results() -> dict:
    protocol = {
        "300w": {"ours": _summary(0.041), "dlib": _summary(0.052), "per_subset": {"afw": {"ours": _summary(0.04), "dlib": _summary(0.05)}}},
        "infanface": {"ours": _summary(0.120), "dlib": _summary(0.110), "per_subset": {}},
    }
    return {
        "generated": "2025-01-01T00:00:00Z",
        "machine": {"cpu": "Test CPU", "threads": 2, "torch": "2.x", "dlib": "20", "gpu": None},
        "model": {"source": "models/finetune/model.pt", "backbone": "mobilenetv3_small_100", "head": "heatmap",
                  "input_size": 128, "sha256": "abc"},
        "accuracy": {"faces": {"300w": 10, "infanface": 10}, "fallbacks": {"300w": 0, "infanface": 2},
                     "protocols": {"detector": protocol, "landmarks": protocol},
                     "dlib_native": {"300w": {"hog_found": 8, "faces": 10, "ours": _summary(0.04), "dlib": _summary(0.05)}},
                     "calibration": {"faces": 20, "hog_found": 15, "detector_to_hog": {"scale": 0.8, "dx": 0.0, "dy": 0.05}}},
        "speed": {"threads": 2, "demo_faces": 18, "frames": 275, "video": "v.mp4",
                  "dlib": {"landmarks_per_face": {"median_ms": 2.0}, "end_to_end": {"median_ms": 150.0, "faces_per_frame": 1.0},
                           "hog_upsample": 1},
                  "cpu": {"landmark_model": {"batch_1": {"median_ms": 6.5, "batch": 1}, "batch_32": {"median_ms": 1.5, "batch": 32}},
                          "end_to_end": {"median_ms": 120.0, "faces_per_frame": 1.0, "frame_size": "640x360"}}},
        "training": {"throughput": {"pretrain": {"images_per_s": 180.0, "device": "cpu"}}},
        "serving": _serving(),
    }


def _serving() -> dict:
    """A serving section as benchmarks/serving_load.py's ``run_serving`` writes it (one bad upload answered 500)."""
    log = {"lines": 120, "tracebacks": 1, "client_error_lines": 99, "answers_by_worker": {"1": 640, "2": 360},
           "log": "benchmarks/out/serving/batching_off.log"}
    return {
        "payload": "`obama.jpg`", "target": ".",
        "bad_uploads": {"not_an_image": {"bytes": 5000, "expect": 400}, "oversized": {"bytes": 68157440, "expect": 413}},
        "batching_on": {"requests": 100, "concurrency": 16, "good": 100, "bad": 0, "errors": 0, "rps": 3.94,
                        "p50_ms": 3900.0, "p95_ms": 4400.0, "status_counts": {"200": 100}, "non_2xx": {},
                        "bad_by_kind": {}, "endpoint": "/landmark_batch", "alive_after": True,
                        "server_log": {**log, "tracebacks": 0, "client_error_lines": 0,
                                       "log": "benchmarks/out/serving/batching_on.log"}},
        "batching_off": {"requests": 1000, "concurrency": 16, "good": 900, "bad": 100, "errors": 1, "rps": 3.5,
                         "p50_ms": 4100.0, "p95_ms": 4900.0, "status_counts": {"200": 900, "400": 50, "413": 49, "500": 1},
                         "non_2xx": {"400": {"not a readable image": 50}, "413": {"upload of # MiB exceeds": 49},
                                     "500": {"unexpected | error": 1}},
                         "bad_by_kind": {"not_an_image": {"400": 50}, "oversized": {"413": 49, "500": 1}},
                         "endpoint": "/faces", "alive_after": False, "server_log": log},
        "note": "1000 requests from 16 clients.",
    }


README = "# Title\n\nIntro text.\n\n## Results\n\n" + START_MARKER + "\nold table\n" + END_MARKER + "\n\n## After\n\nTail.\n"


def test_replaces_only_the_marked_block():
    out = replace_marked_block(README, "| new | table |")
    before, after = README.split(START_MARKER)[0], README.split(END_MARKER)[1]
    assert out.startswith(before + START_MARKER + "\n| new | table |\n" + END_MARKER)
    assert out.endswith(END_MARKER + after)
    assert "old table" not in out
    assert replace_marked_block(out, "| new | table |") == out  # idempotent


@pytest.mark.parametrize("text", ["no markers", START_MARKER + " only", END_MARKER + "\n" + START_MARKER,
                                  START_MARKER + START_MARKER + END_MARKER])
def test_bad_markers_are_refused(text):
    with pytest.raises(ValueError, match="README.md"):
        replace_marked_block(text, "x")


def test_write_report_writes_tables_and_leaves_the_rest_of_the_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    write_report(_results(), tmp_path / "results.json", tmp_path / "results.md", readme)
    text = readme.read_text()
    assert text.startswith("# Title\n\nIntro text.\n\n## Results\n\n" + START_MARKER + "\n")
    assert text.endswith(END_MARKER + "\n\n## After\n\nTail.\n")
    block = text.split(START_MARKER)[1].split(END_MARKER)[0]
    assert "| 300-W (AFW + HELEN) | facelandmarks (champion) | 10 | 4.10% |" in block
    assert "| 300-W (AFW + HELEN) | dlib 68-point | 10 | 5.20% |" in block
    assert "| landmarks per face, batch 32 | 1.50 ms | 2.00 ms | 0.75x |" in block
    assert "No GPU was available" in block
    md = (tmp_path / "results.md").read_text()
    assert "box derived from the annotated landmarks" in md and "| detector | 300-W (AFW + HELEN) | afw |" in md
    saved = json.loads((tmp_path / "results.json").read_text())
    # no 8-client throughput mode measured: None; a bad upload answered 500: the load target is missed
    assert [t["met"] for t in saved["targets"]] == [True, False, True, False, None, False, None]  # no repro timed


def test_missing_markers_leave_every_file_untouched(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="bench:start"):
        write_report(_results(), tmp_path / "results.json", tmp_path / "results.md", readme)
    assert readme.read_text() == "# no markers\n"
    assert not (tmp_path / "results.json").exists()


def test_targets_report_unmeasured_as_none():
    assert {t["met"] for t in evaluate_targets({})} == {None}


@pytest.mark.parametrize("wall_s, met", [(75 * 60.0, True), (75 * 60.0 + 1, False), (3174.0, True)])
def test_repro_target_is_75_minutes_of_the_whole_pipeline(wall_s, met):
    [row] = [t for t in evaluate_targets({"training": {"repro": {"wall_s": wall_s}}}) if "dvc repro" in t["target"]]
    assert row["met"] is met and row["measured"].startswith(f"{wall_s / 60:.1f} min")


def test_skipped_sections_keep_previous_figures():
    old = _results()
    old["training"]["repro"] = {"wall_s": 1800.0, "measured_at": "2024-12-31T00:00:00Z"}
    new = {"generated": "2025-02-01T00:00:00Z", "speed": {"threads": 2, "cpu": {}},
           "training": {"throughput": {}}}
    merged = merge_results(old, new)
    assert merged["accuracy"] == old["accuracy"]          # skipped: kept
    assert merged["speed"] == new["speed"]                # measured: replaced
    assert merged["training"]["repro"]["wall_s"] == 1800.0  # no new repro timing: the last one is kept
    assert merged["generated"] == "2025-02-01T00:00:00Z"
    assert "Accuracy" in render_readme_block(merged)


def test_serving_table_shows_statuses_bad_uploads_and_logs(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    write_report(_results(), tmp_path / "results.json", tmp_path / "results.md", readme)
    block = readme.read_text().split(START_MARKER)[1].split(END_MARKER)[0]
    # rows labelled by endpoint; statuses counted, 5xx and the dead server called out
    assert ("| `/landmark_batch` (adaptive batching) | 16 | 100 (0 bad) | 3.9 | 3900 ms | 4400 ms | 200: 100 | 0 | 0 "
            "| yes |") in block
    assert ("| `/faces` (one photo per request) | 16 | 1000 (100 bad) | 3.5 | 4100 ms | 4900 ms "
            "| 200: 900, 400: 50, 413: 49, 500: 1 | 1 | 1 | **no** |") in block
    md = (tmp_path / "results.md").read_text()
    assert "| not an image | 5000 B | 400 | 400: 50 |" in md  # bad uploads: only the mode that got them
    assert "| oversized | 65.00 MiB | 413 | 413: 49, 500: 1 |" in md
    assert "500 unexpected \\| error x1" in md  # a cause with a pipe does not break the table
    assert "| 1 | 99 | 1: 640, 2: 360 | `benchmarks/out/serving/batching_off.log` |" in md


def test_serving_table_of_an_older_run_without_the_new_fields():
    old = {"batching_on": {"requests": 100, "concurrency": 8, "errors": 5, "rps": 6.5, "p50_ms": 1205.0,
                           "p95_ms": 1300.0, "endpoint": "/faces_batch"},
           "batching_off": {"missing": "the service has no /faces endpoint", "endpoint": "/faces"}}
    block = render_readme_block({"serving": old})
    assert ("| `/faces_batch` (adaptive batching) | 8 | 100 (0 bad) | 6.5 | 1205 ms | 1300 ms | n/a | n/a | 5 | n/a |"
            in block)
    assert "not measured: the service has no /faces endpoint" in block


def test_repro_target_is_missed_when_a_training_stage_hit_its_time_cap(tmp_path):
    """A pipeline that finished in time only because the pretrain stage's ``max_minutes`` cap cut its epochs did not
    run what the params ask; the target row says so, and so does the training table."""
    import json

    from benchmarks.training_speed import training_throughput

    capped = {"train_images_per_second": 35.4, "train_seconds": 3068.4, "epochs_run": 15, "stopped_by_time_cap": True,
              "max_minutes": 50.0, "device": "cpu", "threads": 2}
    full = {**capped, "epochs_run": 10, "stopped_by_time_cap": False, "max_minutes": 25.0}
    (tmp_path / "pretrain.json").write_text(json.dumps(capped))
    (tmp_path / "finetune.json").write_text(json.dumps(full))
    throughput = training_throughput({"pretrain": tmp_path / "pretrain.json", "finetune": tmp_path / "finetune.json"})
    assert throughput["pretrain"]["stopped_by_time_cap"] and not throughput["finetune"]["stopped_by_time_cap"]
    results = {"training": {"repro": {"wall_s": 71.9 * 60}, "throughput": throughput}}
    [row] = [t for t in evaluate_targets(results) if "dvc repro" in t["target"]]
    assert row["met"] is False
    assert "pretrain stopped by its 50.0-min time cap after 15 epochs" in row["measured"]
    assert "finetune" not in row["measured"]
    # the same wall time without the cap is met
    throughput["pretrain"]["stopped_by_time_cap"] = False
    [row] = [t for t in evaluate_targets(results) if "dvc repro" in t["target"]]
    assert row["met"] is True
