"""Every checkpoint of a run in one command: ``predict.py --evaluate OUT --load RUN_DIR --checkpoints all``.

The run's checkpoints (``model-<step>``) are evaluated in step order with one graph: the first one
evaluated builds the predictor, the others' weights are loaded into its session. Each writes the
files of a single evaluation named after its step (``OUT-step<N>.json`` and its
``-metrics.json``, atomically). A checkpoint whose metrics record the same weights (the SHA-1 of
its files) and the same evaluation (:func:`evaluation_sha1`: the config and the annotations) is
not evaluated again: a second run costs the hashing, and an interrupted one continues where it
stopped. After each checkpoint the summary is rewritten: ``OUT-checkpoints.json`` (step, checkpoint
and metrics of each) and ``OUT-checkpoints.png`` (AP against step); at the end a table marks the best.
"""
import hashlib
import json
import os
import re

from maskplus.compat import tf  # first: its shims precede Tensorpack's TensorFlow
from tqdm import tqdm

from maskplus import atomic
from maskplus.engine.run_config import MACHINE_KEYS

CHECKPOINT_INDEX = re.compile(r"^model-(\d+)\.index$")
KINDS = ("bbox", "segm", "boundary")


class SweepError(ValueError):
    """A checkpoint sweep that cannot be done as asked; the message says what to give instead."""


def list_checkpoints(directory):
    """``[(step, prefix)]`` of the TF checkpoints ``model-<step>`` in ``directory``, by step."""
    found = []
    for name in os.listdir(directory):
        m = CHECKPOINT_INDEX.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name[:-len(".index")])))
    return sorted(found)


def select_checkpoints(available, spec):
    """The checkpoints ``--checkpoints`` asks for: ``all``, ``last N``, or steps (``4 8``, ``4,8``)."""
    words = [w for word in spec for w in word.replace(",", " ").split()]
    steps = [s for s, _ in available]
    if not available:
        raise SweepError("--checkpoints: the directory holds no checkpoint (model-<step>.index).")
    if words == ["all"]:
        return list(available)
    if len(words) == 2 and words[0] == "last" and words[1].isdigit() and int(words[1]) > 0:
        return list(available)[-int(words[1]):]
    if words and all(w.isdigit() for w in words):
        absent = [w for w in words if int(w) not in steps]
        if absent:
            raise SweepError(f"--checkpoints: no checkpoint of step {', '.join(absent)}; the run has steps "
                             f"{', '.join(map(str, steps))}.")
        wanted = {int(w) for w in words}
        return [c for c in available if c[0] in wanted]
    raise SweepError(f"--checkpoints takes 'all', 'last N' or steps (e.g. {' '.join(map(str, steps[-2:]))}), "
                     f"got '{' '.join(spec)}'.")


def step_output(output, step):
    """The results file of the checkpoint of ``step``: ``OUT-step<N>.json``."""
    root, ext = os.path.splitext(output)
    return f"{root}-step{step}{ext or '.json'}"


def summary_paths(output):
    """The sweep's summary json and its AP-against-step PNG."""
    root, _ = os.path.splitext(output)
    return root + "-checkpoints.json", root + "-checkpoints.png"


def evaluation_sha1(config_items, annotations):
    """SHA-1 of what decides an evaluation's results besides the weights: every config key (flat
    ``{key: value}``) but the machine's (:data:`run_config.MACHINE_KEYS`) and the data's paths,
    and the annotations (``{dataset: content digest}``) in their place."""
    kept = {k: v for k, v in config_items.items()
            if not any(k == m for m in MACHINE_KEYS) and k not in ("DATA.BASEDIR", "DATA.CUSTOM")}
    text = json.dumps({"config": kept, "annotations": annotations}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()


def recorded_metrics(paths, weights, evaluation):
    """``{dataset: metrics}`` if every results file of ``paths`` ([(dataset, results json)]) is
    scored by a metrics file recording these weights and this evaluation, else None."""
    from maskplus.engine.evaluate import file_sha1, metrics_path
    found = {}
    for name, path in paths:
        try:
            with open(metrics_path(path)) as f:
                info = json.load(f)
            model = info["model"]
            if (info["dataset"] != name or model.get("weights_sha1") != weights
                    or model.get("evaluation_sha1") != evaluation or info["results_sha1"] != file_sha1(path)):
                return None
            found[name] = info["metrics"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    return found


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}"


def headline(metrics):
    """The metric that ranks checkpoints: mask AP when there are masks, else box AP."""
    return "segm/AP" if "segm/AP" in metrics else "bbox/AP"


def best_step(rows):
    """The step of the best of ``rows`` ([(step, metrics)]) by :func:`headline` (the earliest of equals)."""
    key = headline(rows[0][1])
    return max(rows, key=lambda r: (r[1].get(key) if r[1].get(key) is not None else -1, -r[0]))[0]


def format_sweep_table(rows):
    """One row per checkpoint (step; AP and AP50 of bbox, segm and boundary, x100), the best marked."""
    from tabulate import tabulate
    kinds = [k for k in KINDS if f"{k}/AP" in rows[0][1]]
    best = best_step(rows)
    table = [[f"{step}{' *' if step == best else ''}"]
             + [_percent(m.get(f"{k}/{name}")) for k in kinds for name in ("AP", "AP50")] for step, m in rows]
    headers = ["step"] + [f"{k} {name}" for k in kinds for name in ("AP", "AP50")]
    return tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)


def plot_sweep(per_dataset, path, title):
    """AP (solid) and AP50 (dashed) of each kind against step, one panel per dataset; atomic."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, len(per_dataset), figsize=(6 * len(per_dataset), 4), squeeze=False)
    for ax, (name, rows) in zip(axes[0], per_dataset.items()):
        steps = [s for s, _ in rows]
        for color, kind in zip(("tab:blue", "tab:orange", "tab:green"), KINDS):
            if f"{kind}/AP" not in rows[0][1]:
                continue
            for metric, style in (("AP", "-"), ("AP50", "--")):
                values = [100 * m[f"{kind}/{metric}"] if m.get(f"{kind}/{metric}") is not None else float("nan")
                          for _, m in rows]
                ax.plot(steps, values, style, marker="o", color=color, label=f"{kind} {metric}")
        best = best_step(rows)
        ax.axvline(best, color="grey", linewidth=0.8, linestyle=":")
        ax.set(xlabel="step", ylabel="AP (%)", title=f"{name} (best: step {best})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic.writing(path, binary=True) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def write_summary(output, run, per_dataset, checkpoints, datasets):
    """The summary json and PNG beside the results of ``datasets``; rewritten after every checkpoint."""
    summary_json, summary_png = summary_paths(output)
    atomic.write_json(summary_json, {
        "run": os.path.abspath(run),
        "checkpoints": [{"step": s, "checkpoint": os.path.abspath(checkpoints[s]),
                         "results": {name: os.path.abspath(p) for name, p in paths},
                         "metrics": {name: dict(rows)[s] for name, rows in per_dataset.items()}}
                        for s, paths in sorted(_paths_by_step(output, per_dataset, datasets).items())],
        "best": {name: best_step(rows) for name, rows in per_dataset.items()}})
    plot_sweep(per_dataset, summary_png, f"{run}")
    return summary_json, summary_png


def _paths_by_step(output, per_dataset, datasets):
    from maskplus.engine.evaluate import results_paths
    steps = sorted({s for rows in per_dataset.values() for s, _ in rows})
    return {s: results_paths(step_output(output, s), datasets) for s in steps}


def load_weights(predictor, path, strict, model_switches):
    """Load the checkpoint ``path`` into the predictor's session, its graph unchanged
    (``model_switches``: :func:`~maskplus.engine.strict_load.checkpoint_init`'s)."""
    from maskplus.engine.strict_load import checkpoint_init
    init = checkpoint_init(path, strict, model_switches=model_switches)
    with predictor.graph.as_default():
        init._setup_graph()
    init._run_init(predictor.sess)


def evaluate_checkpoints(run, checkpoints, output, evaluation, build_predictor, strict=True, say=print, *,
                         params, model_switches):
    """Evaluate ``checkpoints`` ([(step, prefix)], from :func:`select_checkpoints`) on every
    dataset of ``params`` (:class:`~maskplus.engine.evaluate.EvaluationParams`) into the files of
    ``output`` (see the module doc). ``evaluation``: :func:`evaluation_sha1` of this config;
    ``build_predictor(path, strict=...)`` builds the graph once, the other checkpoints are loaded
    into it (``model_switches``: :func:`~maskplus.engine.strict_load.technique_switches` of this
    config). Returns ``(per dataset [(step, metrics)], evaluated, already evaluated, unreadable)``;
    a checkpoint that cannot be read is reported and skipped, one that does not fit the model
    (strict_load.CheckpointRefused) ends the sweep, as it would every other."""
    from maskplus.engine.checkpoint import CheckpointError
    from maskplus.engine.evaluate import check_evaluation, describe_model, evaluate_datasets, results_paths
    from maskplus.engine.strict_load import CheckpointRefused
    predictor, per_dataset, done, skipped, unreadable = None, {}, 0, 0, []
    bar = tqdm(checkpoints, desc="Checkpoints", unit="ckpt")
    for step, prefix in bar:
        out = step_output(output, step)
        paths = results_paths(out, params.datasets)
        try:
            model = dict(describe_model(prefix), evaluation_sha1=evaluation)
        except (OSError, CheckpointError, tf.errors.OpError) as e:  # TensorFlow's reader: OpError
            unreadable.append(step)
            say(f"Checkpoint step {step} ({prefix}) cannot be read, skipped: {' '.join(str(e).split())}")
            continue
        metrics = recorded_metrics(paths, model["weights_sha1"], evaluation)
        if metrics is not None:
            skipped += 1
            say(f"Checkpoint step {step}: already evaluated with these weights and this config "
                f"({', '.join(p for _, p in paths)}).")
        else:
            check_evaluation(out, with_model=True, datasets=params.datasets)
            try:
                if predictor is None:
                    predictor = build_predictor(prefix, strict=strict)
                else:
                    load_weights(predictor, prefix, strict, model_switches)
            except CheckpointRefused:
                raise
            except CheckpointError as e:
                unreadable.append(step)
                say(f"Checkpoint step {step} ({prefix}) cannot be read, skipped: {' '.join(str(e).split())}")
                continue
            metrics = evaluate_datasets(predictor, out, params, model)
            done += 1
            say(f"Checkpoint step {step}: evaluated ({', '.join(p for _, p in paths)}).")
        for name, m in metrics.items():
            per_dataset.setdefault(name, []).append((step, m))
        write_summary(output, run, per_dataset, dict(checkpoints), params.datasets)
    bar.close()
    return per_dataset, done, skipped, unreadable


def plan_sweep(directory, spec, output, datasets):
    """The checkpoints to evaluate, checked before any model is built: ``directory`` holds
    them, ``spec`` (``--checkpoints``) names some, and every results file of ``datasets`` can be written."""
    from maskplus.engine.evaluate import check_evaluation
    if not os.path.isdir(directory):
        raise SweepError(f"--checkpoints evaluates the checkpoints of a run directory, and --load '{directory}' is "
                         f"not a directory: give the run directory (which holds model-<step>.index files).")
    chosen = select_checkpoints(list_checkpoints(directory), spec)
    for step, _ in chosen:
        check_evaluation(step_output(output, step), with_model=True, datasets=datasets)
    return chosen


def sweep_checkpoints(directory, spec, output, params, config_items, strict=True):
    """``predict.py --evaluate OUT --load RUN_DIR --checkpoints ...``: evaluate the checkpoints
    ``spec`` names with the finalised config (``config_items``, its flat ``{key: value}``; ``params``
    its :class:`~maskplus.engine.evaluate.EvaluationParams`), print the table of each dataset and
    the counts. Returns (per dataset [(step, metrics)], evaluated, already evaluated, unreadable)."""
    from maskplus.data.coco import get_dataset
    from maskplus.engine.inference import build_predictor
    from maskplus.engine.run_dir import data_fingerprint
    from maskplus.engine.strict_load import technique_switches
    chosen = plan_sweep(directory, spec, output, params.datasets)
    annotations = data_fingerprint({name: get_dataset(name).json_path for name in params.datasets})
    evaluation = evaluation_sha1(config_items, annotations)
    per_dataset, done, skipped, unreadable = evaluate_checkpoints(
        directory, chosen, output, evaluation, build_predictor, strict, say=lambda line: tqdm.write(line),
        params=params, model_switches=technique_switches(config_items))
    for name, rows in per_dataset.items():
        best = best_step(rows)
        key = headline(rows[0][1])
        print(f"\nCheckpoints of {directory} on '{name}' (AP x100; * the best by {key.replace('/', ' ')}):")
        print(format_sweep_table(rows))
        print(f"Best: step {best} ({key.replace('/', ' ')} {_percent(dict(rows)[best][key])}).")
    if per_dataset:
        summary_json, summary_png = summary_paths(output)
        print(f"Summary: {summary_json}; AP against step: {summary_png}.")
    print(f"Checkpoints: {done} evaluated, {skipped} already evaluated with the same weights and config"
          + (f", {len(unreadable)} unreadable (steps {', '.join(map(str, unreadable))})" if unreadable else "")
          + f", of {len(chosen)}.", flush=True)
    return per_dataset, done, skipped, unreadable
