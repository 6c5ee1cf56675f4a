"""Figures of the probe harness and of the study: PNGs and the study's table."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

METRIC = {"ss3": "q3", "ss8": "q8", "gb1": "spearman"}
LABEL = {"ss3": "SS3 Q3", "ss8": "SS8 Q8", "gb1": "GB1 Spearman"}


def _bars(axis, names, figures, metric, title):
    values = [figures[n][metric] for n in names]
    lows = [v - figures[n]["ci_low"] for n, v in zip(names, values)]
    highs = [figures[n]["ci_high"] - v for n, v in zip(names, values)]
    axis.bar(range(len(names)), values, yerr=[lows, highs], capsize=4,
             color=["#4c72b0" if n not in ("one_hot", "random_weights") else "#bbbbbb"
                    for n in names])
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    axis.set_title(title, fontsize=10)
    for x, v in enumerate(values):
        axis.text(x, v, "%.3f" % v, ha="center", va="bottom", fontsize=7)


def plot_results(results: dict, path: str) -> None:
    """One panel per task: each model's figure with its 95 % bootstrap interval."""
    tasks = list(results)
    figure, axes = plt.subplots(1, len(tasks), figsize=(max(3.2 * len(tasks), 6.0), 3.2),
                                squeeze=False)
    for axis, task in zip(axes[0], tasks):
        _bars(axis, list(results[task]), results[task], METRIC[task], LABEL[task])
    figure.suptitle("Probes on frozen embeddings (95 % bootstrap intervals)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def study_summary(results: dict, evaluations: dict, arms: list, step: int,
                  train_steps: int) -> dict:
    """The study's figures: per task, each arm's probe figures and the baselines (the one-hot
    and random-weights figures of the first arm's run: the same for every run of one seed), and
    each arm's held-out masked-residue accuracy per masking probability."""
    first = arms[0]["name"]
    tasks = {}
    for task in results[first]:
        tasks[task] = {arm["name"]: results[arm["name"]][task]["model"] for arm in arms}
        for baseline in ("random_weights", "one_hot"):
            if baseline in results[first][task]:
                tasks[task][baseline] = results[first][task][baseline]
    masked = {name: {task: metrics for task, metrics in evaluation.items()}
              for name, evaluation in evaluations.items()}
    return {"arms": arms, "step": step, "train_steps": train_steps, "probes": tasks,
            "eval": masked}


def study_table(summary: dict) -> str:
    """A Markdown table: rows = arms and baselines, columns = probes with intervals."""
    tasks = list(summary["probes"])
    header = "| model | " + " | ".join(LABEL[t] + " [95 % CI]" for t in tasks) + " |"
    lines = [header, "|---" * (len(tasks) + 1) + "|"]
    for name in summary["probes"][tasks[0]]:
        cells = []
        for task in tasks:
            figures = summary["probes"][task][name]
            cells.append("%.3f [%.3f, %.3f]" % (figures[METRIC[task]], figures["ci_low"],
                                                 figures["ci_high"]))
        lines.append("| %s | %s |" % (name, " | ".join(cells)))
    lines += ["", "| arm | task | masked-residue accuracy [95 % CI] | always-L on the same "
              "residues | examples | masked residues |", "|---|---|---|---|---|---|"]
    for name, evaluation in summary["eval"].items():
        for task, figures in evaluation.items():
            lines.append("| %s | %s | %.3f [%.3f, %.3f] | %.3f | %d | %d |" % (
                name, task, figures["accuracy"], figures["ci_low"], figures["ci_high"],
                figures["always_l"], figures["examples"], figures["masked_residues"]))
    return "\n".join(lines)


def plot_study(summary: dict, path: str, masked_task: str = "teacher_forced_p20") -> None:
    """One panel per probe (arms and baselines), and one of the arms' held-out masked-residue
    accuracy (`masked_task` of each arm's evaluation) with the always-`L` rate as a line."""
    tasks = list(summary["probes"])
    masked = {name: evaluation[masked_task] for name, evaluation in summary["eval"].items()
              if masked_task in evaluation}
    panels = len(tasks) + bool(masked)
    figure, axes = plt.subplots(1, panels, figsize=(max(3.4 * panels, 6.0), 3.4),
                                squeeze=False)
    for axis, task in zip(axes[0], tasks):
        _bars(axis, list(summary["probes"][task]), summary["probes"][task], METRIC[task],
              LABEL[task])
    if masked:
        axis = axes[0][-1]
        _bars(axis, list(masked), masked, "accuracy", "masked-residue accuracy (held out)")
        always_l = max(figures["always_l"] for figures in masked.values())
        axis.axhline(always_l, color="#c44e52", linestyle="--", linewidth=1)
        axis.text(-0.4, always_l, "always L %.3f" % always_l, color="#c44e52", fontsize=7,
                  ha="left", va="top")
        # From 80 % of the always-L rate up: differences of a point would not show from 0.
        axis.set_ylim(0.8 * always_l, 1.1 * max(f["ci_high"] for f in masked.values()))
    figure.suptitle("Miniature study: probes per pretraining arm, step %d (95 %% bootstrap CI)"
                    % summary["step"], fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
