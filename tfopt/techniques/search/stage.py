"""search: the smallest (or fastest) file within an accuracy drop, under a time budget.

Walks strided downsampling (latency only), slim rates, sensitivity-spread
sparsities and conversion modes from the latest model (the search
algorithm, algorithm.py), each candidate a .tflite measured in LiteRT on the
validation split, against the baseline's validation accuracy minus
--max_accuracy_drop. The best feasible candidate goes on as the run's final
model, converted in its own mode only (so it is the deploy bundle's file);
the Pareto front's files are kept in search/. Report: every candidate, the
front, the choice, and search.png.
"""

import dataclasses
import io

import numpy as np

from tfopt.core.pareto import pareto_front
from tfopt.litert import evaluate
from tfopt.stages.base import NewModel, Stage, StageOutput, TaskStage
from tfopt.stages.report import percent
from tfopt.techniques.search import algorithm as search
from tfopt.techniques.search.on_task import TaskSearchConfig, check_search, search_stage
from tfopt.training.train import accuracy

DIRECTORY = "search"
_OBJECTIVE_UNITS = {"size": "gzip bytes", "latency": "µs"}


def _check_task(model, task, config: TaskSearchConfig, stages):
  del stages
  check_search(model, task, config)


class SearchStage(Stage):
  name = "search"
  on_task = TaskStage(TaskSearchConfig, search_stage, check=_check_task)
  settings = ("search", "distill", "convert.representative_examples", "evaluate")
  report_fields = {"search": dict}

  def training_epochs(self, config):
    """At most: every slim step, and every sparsity of every chain (size), or
    the strided model's longer fine-tune (latency)."""
    search_config = config.search
    chains = 1 + len(search_config.slim_rates)
    size = search_config.objective == "size"
    prunes = chains * len(search_config.sparsities) if size else 0
    strided = 0 if size else search.LONGER
    return search_config.finetune_epochs * (len(search_config.slim_rates) + prunes + strided)

  def time_budget(self, config):
    return config.search.time_budget

  def run(self, context) -> StageOutput:
    config, data = context.config.search, context.dataset
    baseline = accuracy(context.models["teacher"], data.x_val, data.y_val,
                        context.config.evaluate.batch_size)
    result = search.search(
        context.current_model(), data, config, baseline, context.config.evaluate,
        context.config.convert.representative_examples,
        teacher=context.teacher(config.use_teacher), log=context.log, fits=context.fits)
    chosen = result.candidates[result.chosen]
    context.log(f"search: chose {chosen.name}: {chosen.accuracy:.2%} validation, "
                f"{chosen.gzip_bytes:,} B gzip, {chosen.latency_us:,.1f} µs"
                + ("" if chosen.feasible else
                   f" (no candidate within {config.max_accuracy_drop} pp: the model "
                   "as given goes on)"))
    rows = [dict(candidate.to_json(), front=index in result.front,
                 chosen=index == result.chosen)
            for index, candidate in enumerate(result.candidates)]
    for index in result.front:  # the front's files, on the test set too
      candidate = result.candidates[index]
      filename = f"{DIRECTORY}/{candidate.path}"
      path = context.write_bytes(filename, candidate.content)
      rows[index].update(file=filename, test_accuracy=evaluate.accuracy(
          path, data.x_test, data.y_test, context.config.evaluate.num_threads,
          context.config.evaluate.batch_size))
    record = dict(model=context.current.name, objective=config.objective,
                  max_accuracy_drop=config.max_accuracy_drop,
                  time_budget=config.time_budget, baseline_accuracy=baseline,
                  floor=result.floor, candidates=rows, seconds=result.seconds,
                  skipped=result.skipped)
    context.write_bytes("search.png", plot(record))
    entry = context.current.then("searched", "searched", modes=(chosen.mode,),
                                 sparsity=chosen.spec.sparsity or context.current.sparsity)
    record["entry"] = entry.name
    return StageOutput(models=[NewModel(entry, result.model)], record=record)

  def summarize(self, record, context):
    row = context.row_of(record["entry"], next(
        candidate["mode"] for candidate in record["candidates"] if candidate["chosen"]))
    return {"search": dict(record, chosen_row=dataclasses.asdict(row) if row else None)}

  def report_section(self, report):
    entry = report.search
    if not entry:
      return []
    unit = _OBJECTIVE_UNITS[entry["objective"]]
    chosen = next(candidate for candidate in entry["candidates"] if candidate["chosen"])
    lines = ["", f"## Search: the {'smallest' if entry['objective'] == 'size' else 'fastest'}"
             f" file within {entry['max_accuracy_drop']} pp ({entry['model']})", "",
             f"Baseline validation accuracy {percent(entry['baseline_accuracy'], 2)}, so "
             f"a candidate is feasible at ≥ {percent(entry['floor'], 2)} (its .tflite in "
             f"LiteRT on the validation split). {len(entry['candidates'])} candidates in "
             f"{entry['seconds']:,.0f} s of a {entry['time_budget']:,.0f} s budget; the "
             f"front is plotted in `search.png`, its files are in `{DIRECTORY}/`. Chosen: "
             f"**{chosen['name']}**" + ("" if chosen["feasible"] else
                                          " (none was feasible: the model as given)")
             + ".", ""]
    row = entry.get("chosen_row")
    if row:
      lines += [f"On the test set (the report row `{row['name']}`): "
                f"{percent(row['accuracy'], 2)}, {row['gzip_bytes']:,} B gzip, "
                f"{row['tflite_bytes']:,} B, {row['latency_us']:,.0f} µs.", ""]
    lines += ["| candidate | fine-tune + convert s | validation | test | gzip bytes "
              "| bytes | µs | nonzero params | MACs | feasible | front |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    key = "gzip_bytes" if entry["objective"] == "size" else "latency_us"
    for candidate in sorted(entry["candidates"], key=lambda item: item[key]):
      name = f"**{candidate['name']}**" if candidate["chosen"] else candidate["name"]
      lines.append(
          f"| {name} | {candidate['seconds']:.0f} | {percent(candidate['accuracy'], 2)} "
          f"| {percent(candidate.get('test_accuracy'), 2)} "
          f"| {candidate['gzip_bytes']:,} | {candidate['tflite_bytes']:,} "
          f"| {candidate['latency_us']:,.1f} | {candidate['nonzero_params']:,} "
          f"| {candidate['macs']:,} | {'yes' if candidate['feasible'] else 'no'} "
          f"| {'yes' if candidate['front'] else ''} |")
    if entry["skipped"]:
      lines += ["", "Not tried: " + "; ".join(entry["skipped"]) + "."]
    lines += ["", f"Objective: {unit}. Test accuracy is measured for the front's files only;"
              " the choice is made on the validation split."]
    return lines


def plot(record: dict) -> bytes:
  """search.png: every candidate's objective vs validation accuracy, the
  front, the feasibility line and the choice."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  candidates = record["candidates"]
  key = "gzip_bytes" if record["objective"] == "size" else "latency_us"
  scale = 1024 if key == "gzip_bytes" else 1
  costs = np.array([candidate[key] / scale for candidate in candidates])
  values = np.array([100 * candidate["accuracy"] for candidate in candidates])
  figure, axis = pyplot.subplots(figsize=(8, 5))
  for mode in sorted({candidate["mode"] for candidate in candidates}):
    mask = [candidate["mode"] == mode for candidate in candidates]
    axis.scatter(costs[mask], values[mask], s=30, label=mode)
  front = pareto_front(list(zip(costs, values)))
  axis.step(costs[front], values[front], where="post", color="0.3", linestyle="--",
            linewidth=1, label="Pareto front")
  for position, index in enumerate(front):  # labels alternate above and below
    axis.annotate(candidates[index]["name"], (costs[index], values[index]),
                  textcoords="offset points", xytext=(4, 6 if position % 2 else -11),
                  fontsize=7)
  chosen = next(index for index, candidate in enumerate(candidates) if candidate["chosen"])
  axis.scatter([costs[chosen]], [values[chosen]], s=160, marker="*", color="gold",
               edgecolor="black", zorder=5, label="chosen")
  axis.axhline(100 * record["floor"], color="red", linewidth=0.8, linestyle=":",
               label=f"baseline − {record['max_accuracy_drop']} pp")
  axis.set_xscale("log")
  low = min(values[front].min(), 100 * record["floor"]) - 0.5
  axis.set_ylim(low, min(100.0, values.max() + 0.3))
  hidden = int(np.sum(values < low))
  axis.set_xlabel("gzip size of the .tflite (KiB, log scale)" if scale > 1
                  else "latency, batch 1 (µs, log scale)")
  axis.set_ylabel("validation accuracy in LiteRT (%)")
  axis.grid(True, which="both", alpha=0.3)
  axis.legend(loc="lower right", fontsize=8)
  axis.set_title(f"tfopt search ({record['objective']}) from {record['model']}"
                 + (f"; {hidden} candidate(s) below the axis" if hidden else ""))
  figure.tight_layout()
  image = io.BytesIO()
  figure.savefig(image, format="png", dpi=110)
  pyplot.close(figure)
  return image.getvalue()


STAGE = SearchStage()
