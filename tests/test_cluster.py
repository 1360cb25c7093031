"""darkfold.cluster: detection on a Dask LocalCluster of 2 worker processes gives the lines of a
run in one process, once each, through a worker's death, and resumes an interrupted run."""

import json
import os
import shutil
import signal
import sys

import cloudpickle
import pytest
from conftest import DATA_DIR, make_video, truncated_video, write

import darkfold
from darkfold import ClusterError, outputs

distributed = pytest.importorskip("distributed") if not os.environ.get("CI") else __import__("distributed")
from darkfold import cluster  # noqa: E402 - needs distributed
from darkfold import prediction  # noqa: E402

pytestmark = pytest.mark.dask

SAMPLE_IMAGES = sorted(DATA_DIR.glob("*.jpg"))


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 single-threaded worker processes, shared by this module's tests."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as local, distributed.Client(local) as client:
        yield client


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """200 images (links to data/'s, over and over, each its own name: an input is known by its
    path) with a 60-frame video among them; at the end, a video whose container claims 30
    frames of the 6 it holds, and an image that is not one."""
    folder = tmp_path_factory.mktemp("archive")
    video = make_video(folder / "clip.avi", frames=60)
    cut = truncated_video(folder / "cut.avi", frames=30)
    bad = write(folder / "bad.jpg", "not a jpeg")
    paths = []
    for k in range(200):
        image = SAMPLE_IMAGES[k % len(SAMPLE_IMAGES)]
        os.symlink(image, folder / f"{k:03d}-{image.name}")
        paths.append(str(folder / f"{k:03d}-{image.name}"))
    return paths[:100] + [str(video)] + paths[100:] + [str(cut), str(bad)]


@pytest.fixture(scope="module")
def single_process_lines(archive, tiny_model):
    return [outputs.json_line(result) for result in darkfold.predict(archive, tiny_model)]


def same_lines(found, expected):
    """Line for line the same inputs and detections: confidences within 1e-4, boxes within 1 px
    (a cluster may batch differently)."""
    assert len(found) == len(expected)
    for line, want in zip(found, expected):
        got, want = json.loads(line), json.loads(want)
        assert {k: v for k, v in got.items() if k != "detections"} == {k: v for k, v in want.items()
                                                                        if k != "detections"}
        mine, theirs = got.get("detections", []), want.get("detections", [])  # none for an error
        assert [(d["class"], d["class_id"]) for d in mine] == [(d["class"], d["class_id"]) for d in theirs], line
        for mine, theirs in zip(mine, theirs):
            assert abs(mine["confidence"] - theirs["confidence"]) <= 1e-4
            assert max(abs(a - b) for a, b in zip(mine["box"], theirs["box"])) <= 1


def test_a_local_cluster_gives_the_lines_of_one_process_with_the_video_in_frame_ranges(
        client, archive, single_process_lines, tiny_model, monkeypatch):
    monkeypatch.setattr(cluster, "FRAMES", 16)  # the 60 frames in 4 ranges
    with distributed.get_task_stream(client) as stream:
        lines = [outputs.json_line(result) for result in darkfold.predict(archive, tiny_model, client=client)]
    same_lines(lines, single_process_lines)
    assert [json.loads(line).get("frame") for line in lines[100:160]] == list(range(60))
    cut = [json.loads(line) for line in lines[260:-1]]
    assert [line["frame"] for line in cut] == list(range(len(cut))) and "warnings" in cut[-1]
    assert json.loads(lines[-1])["error"].endswith("bad.jpg: not an image OpenCV can read (unknown format or corrupt file)")
    tasks = [task for task in stream.data if task["key"].startswith("_on_worker")]
    # 100 images 16 a task, the 60 frames 16 a task, 100 images, the cut video's 30 frames, the bad image
    assert len(tasks) == 7 + 4 + 7 + 2 + 1
    assert len({task["worker"] for task in tasks}) == 2


def test_a_worker_killed_mid_run_loses_no_line_and_repeats_none(client, archive, single_process_lines, tiny_model):
    pids = client.run(os.getpid)
    run = darkfold.predict(archive[:100], tiny_model, client=client)
    lines = [outputs.json_line(next(run))]
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)  # both workers have tasks in flight: this one's run again elsewhere
    lines += [outputs.json_line(result) for result in run]
    same_lines(lines, single_process_lines[:100])
    client.wait_for_workers(2, timeout=60)  # the nanny starts a new worker process
    assert victim not in client.run(os.getpid).values()


def _dies_on_eagle(task, detector, reading, inputs=None):
    """prediction.run_task, but a worker given eagle.jpg dies, as one out of memory does."""
    if any(os.path.basename(item.path) == "eagle.jpg" for item in task.items):
        os._exit(1)
    return prediction.run_task(task, detector, reading, inputs)


def test_an_input_that_kills_every_worker_it_meets_is_one_error_and_the_run_goes_on(
        client, tiny_model, monkeypatch, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # _dies_on_eagle travels to the workers
    monkeypatch.setattr(prediction, "run_task", _dies_on_eagle)
    monkeypatch.setattr(cluster, "IMAGES", 1)
    names = ["dog.jpg", "eagle.jpg", "giraffe.jpg"]
    record = tmp_path / "run.jsonl"
    results = list(darkfold.predict([DATA_DIR / name for name in names], tiny_model, client=client, resume=record))
    assert [(os.path.basename(r.source), r.error is None) for r in results] == [
        ("dog.jpg", True), ("eagle.jpg", False), ("giraffe.jpg", True)]
    assert str(results[1].error) == (f"{DATA_DIR / 'eagle.jpg'}: every worker that ran this input's task died (out "
                                     "of memory, or a crash in a decoder?), and Dask gave up on it")
    # Recorded as failed: a resumed run does not feed it to the workers again.
    assert list(darkfold.predict([DATA_DIR / name for name in names], tiny_model, client=client, resume=record)) == []
    client.wait_for_workers(2, timeout=60)


def test_an_interrupted_run_resumed_on_a_cluster_records_every_input_once(
        client, archive, single_process_lines, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "FRAMES", 16)
    inputs, expected = archive[96:106], single_process_lines[96:165]  # 4 images, the video, 5 images
    record = tmp_path / "run.jsonl"
    run = darkfold.predict(inputs, tiny_model, client=client, resume=record)
    for _ in range(4 + 20):  # the first 4 images and 20 of the video's frames
        next(run)
    run.close()
    with open(record, "ab") as file:
        file.write(b'{"video": "cut sho')  # a line a killed run left cut short
    resumed = darkfold.predict(inputs, tiny_model, client=client, resume=record)
    assert resumed.images == 5 and resumed.warnings == [
        f"{record}: its last line was cut short (18 bytes, an interrupted run): dropped, and its input runs again"]
    assert [result.frame for result in resumed][:40] == list(range(20, 60))
    same_lines(record.read_text().splitlines(), expected)


def test_workers_need_no_model_file_the_model_travels(client, tiny_cfg, tiny_weights, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    model = darkfold.load(shutil.copy(tiny_cfg, folder), shutil.copy(tiny_weights, folder))
    shutil.rmtree(folder)
    (result,) = darkfold.predict(DATA_DIR / "dog.jpg", model, client=client)
    assert list(result.detections) == model.detect(str(DATA_DIR / "dog.jpg"))


def test_annotated_copies_are_written_by_the_workers(client, tmp_path, tiny_model):
    results = list(darkfold.predict([DATA_DIR / "dog.jpg", DATA_DIR / "eagle.jpg"], tiny_model, client=client,
                                    output=tmp_path / "out"))
    assert [r.output for r in results] == [str(tmp_path / "out" / name) for name in ("dog.jpg", "eagle.jpg")]
    assert sorted(os.listdir(tmp_path / "out")) == ["dog.jpg", "eagle.jpg"]


def test_inputs_and_an_output_folder_the_workers_do_not_see_are_one_error_before_any_task(
        client, tmp_path, tiny_model, monkeypatch):
    (tmp_path / "photos").mkdir()
    shutil.copy(DATA_DIR / "dog.jpg", tmp_path / "photos")
    monkeypatch.chdir(tmp_path)  # the workers stay in the folder they started in
    with pytest.raises(ClusterError, match=r"photos/dog.jpg: the worker tcp://\S+ cannot read it: the workers "
                                           "read the inputs themselves"):
        list(darkfold.predict("photos", tiny_model, client=client))
    with pytest.raises(ClusterError, match="out: the worker tcp://\\S+ does not see this output folder"):
        list(darkfold.predict(DATA_DIR / "dog.jpg", tiny_model, client=client, output="out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheduler", ["local:0", "local:two", "local:", "localhost"])
def test_a_local_cluster_needs_a_number_of_workers(scheduler, tiny_model):
    with pytest.raises(ClusterError, match=f"{scheduler}: expected local, local:N"):
        darkfold.predict(DATA_DIR, tiny_model, client=scheduler)


def test_localhost_with_a_port_is_an_address_not_a_local_cluster(tiny_model, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
    with pytest.raises(ClusterError, match=r"^localhost:1: cannot reach a Dask scheduler there within 0.5 s"):
        darkfold.predict(DATA_DIR, tiny_model, client="localhost:1")


@pytest.mark.parametrize("scheduler, hint", [("locl", "; did you mean local?"), ("cluster7", "")])
def test_a_scheduler_that_is_neither_local_nor_an_address_is_refused_at_once(scheduler, hint, tiny_model):
    with pytest.raises(ClusterError) as error:
        darkfold.predict(DATA_DIR, tiny_model, client=scheduler)
    assert str(error.value) == (f"{scheduler}: expected local, local:N (N workers, at least 1) or a scheduler's "
                                f"address such as tcp://host:8786{hint}")


class _LostFuture:
    """A future whose scheduler went away: distributed cancels it."""

    def result(self):
        raise distributed.client.FutureCancelledError("key", reason="scheduler-connection-lost")


def test_a_cluster_lost_mid_run_is_one_cluster_error_that_points_to_resume():
    with pytest.raises(ClusterError, match=r"^the Dask cluster was lost during the run \(FutureCancelledError"):
        cluster.Cluster._result(_LostFuture(), None, None)
