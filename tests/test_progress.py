"""What a user sees while a run goes on: stage lines with an estimate, JSON
lines for CI logs, the outputs at the end."""

import json

from absl import flags

from conftest import write_idx_dataset
from tfopt.cli import compress as cli
from tfopt.core import progress

FLAGS = flags.FLAGS


def test_the_estimate_is_the_epochs_left_times_the_latest_epoch(capsys):
  clock = progress.Progress(["teacher", "distill", "prune", "convert"],
                            {"teacher": 2, "distill": 3, "prune": 1, "convert": 0})
  clock.stage_started("teacher", 1)
  assert clock.training_left() is None  # no epoch measured yet: no guess
  clock.epoch_done(10.0)
  assert clock.training_left() == 50.0  # 1 + 3 + 1 epochs left
  clock.epoch_done(12.0)
  clock.stage_done("teacher", 22.0)
  clock.stage_started("distill", 2)
  assert clock.training_left() == 48.0  # 4 epochs x 12 s
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "[tfopt] stage 1 of 4: teacher (0 min 00 s into the run)"
  assert lines[-1].startswith("[tfopt] stage 2 of 4: distill (0 min 00 s into the run; "
                              "0 min 48 s of training left at the last epoch's pace)")


def test_a_stage_with_a_time_budget_is_estimated_at_most_that(capsys):
  clock = progress.Progress(["distill", "search"], {"distill": 2, "search": 38},
                            {"search": 100.0})
  clock.stage_started("distill", 1)
  clock.epoch_done(10.0)
  assert clock.training_left() == 110.0  # 1 distill epoch + the search's 100 s
  capsys.readouterr()


def test_json_log_format_gives_one_object_per_line(tmp_path, capsys):
  data_dir = tmp_path / "data"
  write_idx_dataset(data_dir / "mnist", train=160, test=40)
  FLAGS.unparse_flags()
  FLAGS(["tfopt compress", "--quick", "--stages", "teacher,distill", "--log_format", "json",
         "--data_dir", str(data_dir), "--output_dir", str(tmp_path / "run")])
  try:
    assert cli.main(["tfopt compress"]) == 0
  finally:
    progress.set_format("text")
  events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  stages = [event for event in events if event["event"] == "stage"]
  assert [(event["stage"], event["position"], event["stages"]) for event in stages] == [
      ("teacher", 1, 4), ("distill", 2, 4), ("convert", 3, 4), ("evaluate", 4, 4)]
  assert stages[0]["training_left_s"] is None and stages[1]["training_left_s"] > 0
  epochs = [event for event in events if event["event"] == "epoch"]
  assert [(event["stage"], event["epoch"]) for event in epochs] == [
      ("teacher", 1), ("teacher", 2), ("distill", 1), ("distill", 2)]
  assert all(0 <= event["accuracy"] <= 1 and event["seconds"] > 0 for event in epochs)
  done = events[-1]
  assert done["event"] == "done"
  assert done["outputs"]["report"] == str(tmp_path / "run" / "report.md")
  assert done["outputs"]["training curves"] == f"tensorboard --logdir {tmp_path / 'run'}/tensorboard"


def test_json_log_format_reports_an_error_as_an_event_too(tmp_path, capsys):
  FLAGS.unparse_flags()
  FLAGS(["tfopt compress", "--log_format", "json", "--target_sparsity", "2",
         "--output_dir", str(tmp_path / "run")])
  try:
    assert cli.main(["tfopt compress"]) == 2
  finally:
    progress.set_format("text")
  captured = capsys.readouterr()
  event = json.loads(captured.out)
  assert event["event"] == "error" and "target_sparsity=2.0 is invalid" in event["message"]
  assert captured.err.startswith("tfopt: error: target_sparsity=2.0 is invalid")
