"""The run: plan, pre-flight, resume, the stage loop, then report and deploy bundle.

`run(config)` owns the run's state (class Run): the models made, which one
is current, their files, the .tflite files and report rows, and each stage's
record. Stages get a read-only Context and return a StageOutput; Run.keep
saves its models atomically, lists every file in manifest.json, and turns
the output into JSON, which is both what the next stages see and what the
manifest keeps. A rerun replays each kept stage from that JSON (Run.replay),
so a fresh and a resumed run hand the same values on.
"""

import dataclasses
import os
import shutil
import tempfile
import time
import types
from typing import Dict, List, Optional

import numpy as np

from tfopt.config import PipelineConfig, recipe, registry
from tfopt.core import artifacts, progress
from tfopt.core._keras import keras
from tfopt.run import deploy, preflight, resume
from tfopt.stages.base import Context, ModelEntry, StageOutput, log
from tfopt.stages.report import ModelRow, Report, machine_info, versions
from tfopt.techniques.qat import algorithm as qat
from tfopt.training import distribute, epoch_checkpoints, tensorboard_logs
from tfopt.training.train import FitContext

__all__ = ["Run", "run"]


class Run:
  """What one run has made so far; only the runner changes it."""

  def __init__(self, config: PipelineConfig, dataset, distribution, user_model,
               manifest: artifacts.Manifest):
    self.config, self.dataset, self.distribution = config, dataset, distribution
    self.user_model, self.manifest = user_model, manifest
    self.entries: List[ModelEntry] = []
    self.current = None
    self.models: Dict[str, keras.Model] = {}
    self.tflite_files: Dict[str, tuple] = {}
    self.rows: List[ModelRow] = []
    self.records: Dict[str, dict] = {}
    self.seconds: Dict[str, float] = {}
    self.resumed: List[str] = []
    self.cache: dict = {}  # Keras top-1 and .tflite contents, shared by contexts

  def context(self, stage: str, fits: Optional[FitContext] = None) -> Context:
    """A read-only view of the run so far, for `stage`."""
    return Context(
        stage=stage, config=self.config, dataset=self.dataset,
        output_dir=self.config.output_dir, distribution=self.distribution,
        user_model=self.user_model, entries=tuple(self.entries), current=self.current,
        records=types.MappingProxyType(dict(self.records)),
        tflite_files=types.MappingProxyType(dict(self.tflite_files)),
        rows=tuple(self.rows), models=types.MappingProxyType(dict(self.models)),
        manifest=self.manifest, cache=self.cache, fits=fits)

  def keep(self, stage: str, output: StageOutput) -> dict:
    """Saves a stage's models, takes its output on; returns the output as JSON."""
    models = []
    for made in output.models:
      filename = f"{made.entry.name}{made.extension}"
      path = artifacts.save_keras_atomic(made.model,
                                         os.path.join(self.config.output_dir, filename))
      self.manifest.record(stage, path)
      models.append({"entry": made.entry.to_json(), "file": filename,
                     "current": made.current})
    as_json = resume.to_json({
        "models": models, "record": output.record, "tflite_files": output.tflite_files,
        "rows": [dataclasses.asdict(row) for row in output.rows]})
    self._take(stage, as_json, {made.entry.name: made.model for made in output.models})
    return as_json

  def replay(self, finished: dict):
    """Takes on a kept stage's output from its manifest record; reloads its models."""
    output = finished["output"]
    models = {made["entry"]["name"]: _load_run_model(
        os.path.join(self.config.output_dir, made["file"]), self.config.allow_unsafe_model)
              for made in output["models"]}
    self._take(finished["stage"], output, models)
    self.seconds[finished["stage"]] = finished["seconds"]
    self.resumed.append(finished["stage"])

  def _take(self, stage: str, output: dict, models: Dict[str, keras.Model]):
    for made in output["models"]:
      entry = ModelEntry.from_json(made["entry"])
      self.entries.append(entry)
      self.models[entry.name] = models[entry.name]
      if made["current"]:
        self.current = entry
    self.tflite_files.update({row: tuple(pair)
                              for row, pair in output["tflite_files"].items()})
    self.rows += [ModelRow(**row) for row in output["rows"]]
    self.records[stage] = output["record"]


def _load_run_model(path: str, allow_unsafe: bool) -> keras.Model:
  """A model an earlier run saved: tf_keras .keras, or .h5 for QAT models."""
  if path.endswith(".h5"):
    with qat.quantize_scope():
      return keras.models.load_model(path, compile=False)
  return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)


def run(config: PipelineConfig, force: bool = False) -> Report:
  """Runs the whole pipeline and writes its artifacts and report.

  Everything that can be checked before training (builder names, the output
  directory, the data, each stage's layer names) is checked first, so bad
  input fails fast and leaves no files behind. In an output directory of an
  earlier run, the stages that finished there with the same inputs are kept
  (see tfopt.run.resume) unless `force`; the others are redone.

  Returns:
    The Report (also written as report.json / report.md / report.png).

  Raises:
    TfoptError: bad configuration, data or output directory.
  """
  # First: MultiWorkerMirroredStrategy must be set up before other TF work.
  distribution = distribute.Distribution(config.strategy, config.worker_timeout)
  if distribution.name != "default":
    log(f"strategy: {distribution.describe()}; teacher, distill and prune "
        "train with a global batch of batch_size x "
        f"{distribution.replicas}")
  if distribution.name == "multi_worker":
    force = True  # every worker must run the same steps; see BUILD_NOTES
  with distribution.other_workers_watched():
    if distribution.is_chief:
      return _run(config, force, distribution)
    # Another worker runs the same steps (their collectives must match) and
    # writes into a scratch directory, deleted afterwards.
    scratch = tempfile.mkdtemp(prefix="tfopt-worker-")
    try:
      return _run(dataclasses.replace(config, output_dir=scratch), force, distribution)
    finally:
      shutil.rmtree(scratch, ignore_errors=True)


def _run(config: PipelineConfig, force: bool,
         distribution: distribute.Distribution) -> Report:
  started = time.perf_counter()
  config, user_model, dataset = preflight.check_inputs(config)
  preflight.make_output_dir(config.output_dir)
  with preflight.output_dir_lock(config.output_dir):
    preflight.check_output_dir(config.output_dir)  # again: a run may have just ended
    preflight.remove_half_written(config.output_dir)
    return _locked_run(config, force, distribution, user_model, dataset, started)


def _locked_run(config, force, distribution, user_model, dataset, started) -> Report:
  state = Run(config, dataset, distribution, user_model,
              artifacts.Manifest(config.output_dir))
  plan = registry.plan(config)
  keys = resume.stage_keys(
      config, plan, resume.data_fingerprint(dataset),
      resume.model_fingerprint(user_model.model) if user_model else None,
      distribution.replicas)
  state.seconds["data"] = time.perf_counter() - started
  kept = _resume(state, [stage.name for stage in plan], keys, force)
  state.manifest.record("recipe", artifacts.write_text_atomic(
      os.path.join(config.output_dir, recipe.FILENAME), recipe.dump(config)))
  clock = progress.Progress(
      [stage.name for stage in plan],
      {stage.name: stage.training_epochs(config) for stage in plan[kept:]},
      {stage.name: stage.time_budget(config) for stage in plan
       if stage.time_budget(config) is not None})
  _run_stages(state, plan, keys, kept, clock)
  state.seconds["total"] = sum(state.seconds.values())
  write_deploy_bundle(state)
  result = write_report(state, plan)
  for what, where in result.outputs.items():
    log(f"{what}: {where}", event="output", what=what, where=where)
  return result


def _run_stages(state: Run, plan: list, keys: List[str], kept: int,
                clock: progress.Progress):
  """Runs the stages after the `kept` ones, each saved and listed as it ends."""
  config = state.config
  for position, (stage, key) in enumerate(zip(plan[kept:], keys[kept:]), start=kept + 1):
    started = time.perf_counter()
    clock.stage_started(stage.name, position)
    # Each stage starts from the same seed: the distilled and scratch students
    # see the same shuffles, and a stage's result does not depend on the ones
    # before it (nor on whether they ran or were resumed).
    keras.utils.set_random_seed(config.seed)
    checkpoints = epoch_checkpoints.StageCheckpoints(state.manifest, stage.name, key,
                                                     config.seed, log)
    with checkpoints.opened():
      context = state.context(stage.name, FitContext(checkpoints, clock))
      output = state.keep(stage.name, stage.run(context))
    state.seconds[stage.name] = time.perf_counter() - started
    state.manifest.finish(stage.name, key, output, state.seconds[stage.name])
    clock.stage_done(stage.name, state.seconds[stage.name])


def _outputs(config: PipelineConfig) -> Dict[str, str]:
  """Where the run's outputs are, and the commands that open them."""
  out = config.output_dir
  outputs = {"report": os.path.join(out, "report.md"),
             "plot": os.path.join(out, "report.png"),
             "deploy bundle": os.path.join(out, deploy.DIRECTORY) + "/",
             "recipe (rerun it)": f"tfopt compress --recipe {os.path.join(out, recipe.FILENAME)}"}
  if os.path.isdir(os.path.join(out, tensorboard_logs.DIRECTORY)):
    outputs["training curves"] = tensorboard_logs.command(out)
  return outputs


def _resume(state: Run, names: List[str], keys: List[str], force: bool) -> int:
  """Replays the stages an earlier run finished with the same inputs.

  Deletes tfopt's own files that no kept stage vouches for (see
  Manifest.keep_stages) and returns how many leading stages were kept.
  """
  manifest = state.manifest
  kept = 0 if force else resume.kept_stage_count(manifest, names, keys, log)
  # The epoch checkpoints of the first stage to run, if written with its key.
  resumable = manifest.checkpoints_of(names[kept], keys[kept]) if (
      kept < len(names) and not force) else []
  removed = manifest.keep_stages(kept, also_keep=resumable)
  if removed:
    log(f"resume: removed {len(removed)} file(s) of the earlier run that this "
        "run writes anew: " + ", ".join(removed[:6]) + (" ..." if len(removed) > 6 else ""))
  for finished in manifest.stages:
    state.replay(finished)
  if kept:
    log(f"resume: kept {', '.join(state.resumed)} from the earlier run in "
        f"{state.config.output_dir} (settings unchanged, files verified by sha256)"
        + ("" if kept < len(names) else "; nothing left to redo"))
  return kept


def write_report(state: Run, plan: list) -> Report:
  """Each stage summarizes its record; the report is written and listed."""
  context, data = state.context("report"), state.dataset
  sections = {}
  for stage in registry.all_stages():  # every key is there, empty if not run
    sections.update({key: empty() for key, empty in stage.report_fields.items()})
  for stage in plan:
    sections.update(stage.summarize(state.records[stage.name], context))
  result = Report(
      dataset=data.name, test_examples=len(data.x_test),
      baseline="baseline float32", models=list(state.rows),
      baseline_source=_baseline_source(state),
      data_source=f"{data.source}, {data.describe()}",
      keras_accuracy={name: float(np.mean(context.keras_top1(name) == data.y_test))
                      for name in state.models},
      sections=sections, stages=dict(state.seconds), resumed_stages=list(state.resumed),
      config=state.config.to_dict(), machine=machine_info(), versions=versions(),
      outputs=_outputs(state.config))
  for path in result.save(state.config.output_dir):
    state.manifest.record("report", path)
  return result


def write_deploy_bundle(state: Run):
  """deploy/: the final model's file in the most deployable mode there is."""
  context = state.context("deploy")
  row = next(row for row in (context.row_of(state.current.name, mode)
                             for mode in deploy.PREFERRED_MODES) if row is not None)
  paths = deploy.write_bundle(state.config.output_dir, context.path(row.path),
                              dataclasses.asdict(row), state.dataset.class_names,
                              state.dataset.name, state.dataset.input_range,
                              _int8_recipe(state, row.name))
  for path in paths:
    state.manifest.record("deploy", path)
  log(f"deploy: {row.name} -> {os.path.join(state.config.output_dir, deploy.DIRECTORY)}/")


def _int8_recipe(state: Run, row_name: str) -> Optional[dict]:
  """How the deployed int8 file was quantized, from the convert stage's record."""
  record = state.records.get("convert", {}).get("int8_repair", {}).get(row_name)
  if not record:
    return None
  chosen, plain = record["chosen"], record["plain"]
  return {"recipe": chosen["choice"], "repaired": record["changed"],
          "validation_images": record["validation_images"],
          "validation_agreement_with_float": chosen["agreement"],
          "plain_int8_validation_agreement": plain["agreement"],
          "output_snr_db": chosen["output_snr_db"],
          "plain_int8_output_snr_db": plain["output_snr_db"],
          "left_float_by_the_converter": record.get("kept_float", [])}


def _baseline_source(state: Run) -> str:
  if state.user_model is None:
    config = state.config.teacher
    return f"the {config.builder!r} builder, trained here for {config.epochs} epoch(s)"
  return (f"your model {state.config.model} ({state.user_model.source}), "
          "not retrained")
