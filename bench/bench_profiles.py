"""The profiles job's residues per core-second against HMMER's `hmmbuild`, on the same families.

    python3 bench/bench_profiles.py [--rounds 3]

Families: real Pfam seed alignments of Debian's hmmer-examples (fn3, Pkinase, globins4, RRM_1,
Caudal_act, LuxC, Patched, SMC_N) and FAMSA's alignments in pyfamsa's test data (4,188 hemopexin
domains, adeno fiber). Three measurements, each the least CPU time of `--rounds` rounds:

- baseline: `hmmbuild --cpu 0` (one thread) per family, CPU time of the child processes;
- hmmbuild calibrating as the job does (`--EmN/--EvN/--EfN` = the job's
  `profile_hmm.CALIBRATION_SEQUENCES`): the same HMMER work as the job's builds;
- the job's per-family work in this process (read the alignment, build the HMM with pyhmmer,
  map every row to its states, quantize, serialize the Example): what a worker spends per family;
- the whole job, `python -m pipelines.profiles` on DirectRunner, user + system time of the
  process and its children (Beam and TensorFlow start-up included: a fixed cost per run).

Printed as residues per core-second and as ratios to the baseline (goal: >= 0.8 per family).
hmmbuild and pyhmmer run the same HMMER code (weighting, priors), but the job calibrates
E-values on few sequences (its targets are emissions, which calibration does not change): the
ratio to the second row shows what the job adds around HMMER.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from pipelines import alignments  # noqa: E402
from pipelines import profile_hmm  # noqa: E402
from pipelines import profiles  # noqa: E402
from pipelines import records  # noqa: E402
from pipelines import tfrecords  # noqa: E402

HMMER = "/usr/share/doc/hmmer/examples/"
PYFAMSA = os.path.join(os.path.dirname(__import__("pyfamsa").__file__), "tests", "data")
FAMILIES = (
    HMMER + "tutorial/fn3.sto", HMMER + "tutorial/Pkinase.sto", HMMER + "tutorial/globins4.sto",
    HMMER + "testsuite/RRM_1.sto.gz", HMMER + "testsuite/Caudal_act.sto.gz",
    HMMER + "testsuite/LuxC.sto.gz", HMMER + "testsuite/Patched.sto.gz",
    HMMER + "testsuite/SMC_N.sto.gz", os.path.join(PYFAMSA, "hemopexin.medoid-nj.afa"),
    os.path.join(PYFAMSA, "adeno_fiber.upgma.afa"),
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def prepare(workdir: str) -> list[str]:
    """Plain copies of the families (hmmbuild reads no .gz), one file each."""
    paths = []
    for path in FAMILIES:
        target = os.path.join(workdir, os.path.basename(path).replace(".gz", ""))
        opener = __import__("gzip").open if path.endswith(".gz") else open
        with opener(path, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
        paths.append(target)
    return paths


def residues_of(paths: list[str]) -> int:
    return sum(len(row.translate(None, alignments.GAPS)) for path in paths
               for family in alignments.read_families(path) for row in family.rows)


def hmmbuild_seconds(paths: list[str], workdir: str, flags: tuple = ()) -> float:
    before = _children_cpu()
    for path in paths:
        informat = "afa" if path.endswith(".afa") else "stockholm"
        subprocess.run(["hmmbuild", "--cpu", "0", "--amino", "--informat", informat, *flags,
                        os.path.join(workdir, "out.hmm"), path], check=True,
                       stdout=subprocess.DEVNULL)
    return _children_cpu() - before


def job_work_seconds(paths: list[str]) -> float:
    """CPU time of the job's DoFn on each family (read, HMM, targets, quantized profiles) and
    of the Example serialization of its records."""
    profile_fn = profiles._BuiltProfilesFn(  # pylint: disable=protected-access
        records.Rules(), profile_hmm.BuildOptions(), profile_hmm.DEFAULT_MIN_SEQUENCES,
        profile_hmm.INSERT_EMISSION)
    profile_fn.setup()
    started = time.process_time()
    for path in paths:
        for family in alignments.read_families(path):
            for output in profile_fn.process(family):
                if isinstance(output, profiles.ProfileRecord):
                    tfrecords.profile_example(output, len(family.rows))
    return time.process_time() - started


def whole_job_seconds(paths: list[str], workdir: str) -> float:
    before = _children_cpu()
    out = os.path.join(workdir, "job")
    subprocess.run([sys.executable, "-m", "pipelines.profiles", "--output_dir=" + out,
                    "--overwrite", "--direct_num_workers=1"] + ["--input=" + p for p in paths],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return _children_cpu() - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="bench-profiles-")
    try:
        paths = prepare(workdir)
        residues = residues_of(paths)
        print("%d families, %d residues" % (len(paths), residues))
        job_work_seconds(paths[:1])  # imports, first pyhmmer call
        calibration = tuple("--%s=%d" % (flag, profile_hmm.CALIBRATION_SEQUENCES)
                            for flag in ("EmN", "EvN", "EfN"))
        baseline = min(hmmbuild_seconds(paths, workdir) for _ in range(args.rounds))
        like_job = min(hmmbuild_seconds(paths, workdir, calibration) for _ in range(args.rounds))
        work = min(job_work_seconds(paths) for _ in range(args.rounds))
        whole = min(whole_job_seconds(paths, workdir) for _ in range(max(1, args.rounds - 1)))
        rows = [("hmmbuild --cpu 0 (baseline)", baseline),
                ("hmmbuild, job's calibration", like_job), ("job, per-family work", work),
                ("job, whole DirectRunner run", whole)]
        for name, seconds in rows:
            print("%-30s %7.2f core-s  %9.0f residues/core-s  ratio %.2f  (%.2f of row 2)" % (
                name, seconds, residues / seconds, baseline / seconds, like_job / seconds))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
