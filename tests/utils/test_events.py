import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from d2mask.engine import training
from d2mask.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    ImageWriter,
    JSONWriter,
    TensorboardXWriter,
    get_event_storage,
    has_event_storage,
)


def test_get_event_storage_without_one_is_a_clear_error():
    assert not has_event_storage()
    with pytest.raises(RuntimeError, match="with EventStorage"):
        get_event_storage()


def test_storages_nest_and_unwind():
    with EventStorage() as outer:
        assert get_event_storage() is outer
        with EventStorage(5) as inner:
            assert get_event_storage() is inner and inner.iter == 5
        assert get_event_storage() is outer
    assert not has_event_storage()


def test_smoothed_scalars_report_the_window_median_others_the_latest():
    with EventStorage() as storage:
        for value in [1.0, 2.0, 10.0]:
            storage.put_scalars(loss=value)
            storage.put_scalar("lr", value * 0.1, smoothing_hint=False)
            storage.step()
        smoothed = storage.latest_with_smoothing_hint(window_size=3)
        assert smoothed["loss"] == (2.0, 2)
        assert smoothed["lr"] == (pytest.approx(1.0), 2)
        assert storage.latest()["loss"] == (10.0, 2)
        assert storage.latest_with_smoothing_hint(window_size=2)["loss"][0] == 6.0
        assert storage.history("loss").values() == [(1.0, 0), (2.0, 1), (10.0, 2)]
        assert storage.smoothing_hints() == {"loss": True, "lr": False}


def test_tensor_values_and_explicit_iteration():
    with EventStorage(3) as storage:
        storage.put_scalar("x", torch.tensor(2.5), cur_iter=7)
        assert storage.latest()["x"] == (2.5, 7)


def test_conflicting_smoothing_hints_and_unknown_history():
    with EventStorage() as storage:
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
        with pytest.raises(ValueError, match="smoothing_hint"):
            storage.put_scalar("lr", 0.2)
        with pytest.raises(KeyError, match="lr"):
            storage.history("nope")


def test_images_are_queued_and_checked():
    with EventStorage(2) as storage:
        storage.put_image("vis", torch.zeros(3, 4, 5))
        assert [(n, i) for n, _, i in storage.images] == [("vis", 2)]
        assert isinstance(storage.images[0][1], np.ndarray)
        storage.clear_images()
        assert storage.images == []
        with pytest.raises(ValueError, match=r"\(3, H, W\)"):
            storage.put_image("bad", torch.zeros(4, 4))


def test_json_writer_writes_each_iteration_once(tmp_path):
    path = tmp_path / "metrics.json"
    writer = JSONWriter(str(path), window_size=2)
    with EventStorage() as storage:
        for i in range(3):
            storage.iter = i
            storage.put_scalars(loss=float(i))
        storage.put_scalar("bbox/AP", 50.0, smoothing_hint=False)
        writer.write()
        writer.write()  # nothing new
        storage.iter = 3
        storage.put_scalars(loss=3.0)
        writer.write()
    writer.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # latest values only: iteration 2 holds the median of the last 2 losses and the AP
    assert records == [{"iteration": 2, "loss": 1.5, "bbox/AP": 50.0}, {"iteration": 3, "loss": 2.5}]


def test_common_metric_printer_line(caplog):
    printer = CommonMetricPrinter(max_iter=100, window_size=2)
    with EventStorage() as storage, caplog.at_level(logging.INFO, logger="d2mask.utils.events"):
        for i in range(4):
            storage.iter = i
            storage.put_scalars(total_loss=1.0 + i, loss_cls=0.5, time=0.5, data_time=0.01)
            storage.put_scalar("lr", 0.02, smoothing_hint=False)
        printer.write()
        storage.iter = 100
        printer.write()  # after training: no line
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    line = lines[0]
    # ETA: median time 0.5 s x 96 remaining iterations = 48 s
    assert line.startswith("eta: 0:00:48  iter: 3")
    for part in ("total_loss: 3.5", "loss_cls: 0.5", "time: 0.5000", "data_time: 0.0100", "lr: 0.02", "max_mem: "):
        assert part in line


@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("tensorboard"), reason="tensorboard is not installed"
)
def test_tensorboard_writer_writes_event_file(tmp_path):
    writer = TensorboardXWriter(str(tmp_path))
    with EventStorage() as storage:
        storage.put_scalars(loss=1.0)
        storage.put_image("vis", torch.rand(3, 8, 8))
        writer.write()
        assert storage.images == []
    writer.close()
    files = [f for f in os.listdir(tmp_path) if f.startswith("events.out.tfevents")]
    assert files and os.path.getsize(tmp_path / files[0]) > 0


def test_image_writer_writes_queued_images_as_png_and_frees_them(tmp_path, monkeypatch):
    red = np.zeros((3, 4, 5), dtype=np.float32)
    red[0] = 1.0  # RGB in [0, 1]
    gray = np.full((3, 2, 2), 128, dtype=np.uint8)
    with EventStorage(7) as storage:
        storage.put_image("Left: GT;  Right: proposals", red)
        storage.put_image("gray", gray)
        ImageWriter(str(tmp_path / "vis")).write()
        assert storage.images == []
    written = sorted(os.listdir(tmp_path / "vis"))
    assert written == ["0000007_Left__GT___Right__proposals.png", "0000007_gray.png"]
    bgr = cv2.imread(str(tmp_path / "vis" / written[0]))
    assert bgr.shape == (4, 5, 3) and (bgr[..., 2] == 255).all() and (bgr[..., :2] == 0).all()
    assert (cv2.imread(str(tmp_path / "vis" / written[1])) == 128).all()

    # without TensorBoard, the default writers keep VIS_PERIOD's images as these files
    monkeypatch.setattr(training, "_tensorboard_available", lambda: False)
    assert any(isinstance(w, ImageWriter) for w in training.build_default_writers(str(tmp_path), 10))


def test_detectron2s_default_writers_creates_the_folder_and_writes_metrics(tmp_path, monkeypatch):
    """Detectron2's lazyconfig_train_net.py builds its writers with
    `d2mask.engine.default_writers(output_dir, max_iter)`, for a folder that need not exist yet."""
    from d2mask.engine import default_writers

    monkeypatch.setattr(training, "_tensorboard_available", lambda: False)
    out = tmp_path / "new" / "run"
    writers = default_writers(str(out), 5)
    assert [type(w).__name__ for w in writers] == ["CommonMetricPrinter", "JSONWriter", "ImageWriter"]
    with EventStorage(0) as storage:
        storage.put_scalar("loss", 1.5)
        writers[1].write()
    assert json.loads((out / "metrics.json").read_text().splitlines()[0])["loss"] == 1.5
