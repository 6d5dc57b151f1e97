"""verify_results: TEST.EXPECTED_RESULTS checked against evaluation results, as in Detectron2."""
import pytest

from d2mask.config import get_cfg
from d2mask.evaluation import verify_results


def _cfg(expected):
    cfg = get_cfg()
    cfg.TEST.EXPECTED_RESULTS = expected
    return cfg


def test_nothing_expected_passes():
    assert verify_results(_cfg([]), {})


def test_within_tolerance_passes_and_a_miss_exits_with_status_1(caplog):
    results = {"bbox": {"AP": 38.4, "AP50": 60.0}, "segm": {"AP": float("nan")}}
    assert verify_results(_cfg([["bbox", "AP", 38.5, 0.2], ["bbox", "AP50", 60.0, 0.0]]), results)
    for expected in (["bbox", "AP", 38.5, 0.05], ["segm", "AP", 30.0, 1.0], ["keypoints", "AP", 1.0, 1.0]):
        with pytest.raises(SystemExit) as exit_info:
            verify_results(_cfg([expected]), results)
        assert exit_info.value.code == 1
    assert "bbox/AP = 38.4, expected 38.5 +- 0.05" in caplog.text


def test_print_csv_format_logs_detectron2s_copypaste_lines(caplog):
    from d2mask.evaluation import print_csv_format

    caplog.set_level("INFO", logger="d2mask")
    print_csv_format({"bbox": {"AP": 37.91234, "AP50": 58.5, "AP-person": 50.0}, "sem_seg": {"mIoU": 1}, "count": 3})
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "copypaste: Task: bbox", "copypaste: AP,AP50", "copypaste: 37.9123,58.5000",
        "copypaste: Task: sem_seg", "copypaste: mIoU", "copypaste: 1.0000", "copypaste: count=3",
    ]
