"""Prepares the probe sets from the installed sidechainnet and mavenn wheels (no download).

    python -m probes.prepare --output_dir=out/probe_data

Writes the files listed in `probes.data.prepare` and prints the split sizes; what each step does
is in the docstring of `probes.data`. The same flags give byte-identical files.
"""
import argparse
import json
import sys

from probes import data


def main(argv=None):
    defaults, gb1_defaults = data.SsParams(), data.Gb1Params()
    sizes = dict(defaults.sizes)
    gb1_sizes = dict(gb1_defaults.sizes)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--dssp_json", help="default: the installed sidechainnet's file")
    parser.add_argument("--gb1_csv", help="default: the installed mavenn's file")
    parser.add_argument("--min_length", type=int, default=defaults.min_length)
    parser.add_argument("--max_length", type=int, default=defaults.max_length)
    parser.add_argument("--pool_size", type=int, default=defaults.pool_size,
                        help="unique sequences drawn before clustering")
    parser.add_argument("--min_identity", type=float, default=defaults.min_identity)
    parser.add_argument("--min_coverage", type=float, default=defaults.min_coverage)
    parser.add_argument("--test_fraction", type=float, default=defaults.test_fraction,
                        help="of the clusters")
    parser.add_argument("--validation_fraction", type=float, default=defaults.validation_fraction)
    for split in data.SPLITS:
        parser.add_argument("--ss_%s_size" % split, type=int, default=sizes[split])
        parser.add_argument("--gb1_%s_size" % split, type=int, default=gb1_sizes[split])
    args = parser.parse_args(argv)
    ss_params = data.SsParams(
        seed=args.seed, min_length=args.min_length, max_length=args.max_length,
        pool_size=args.pool_size, min_identity=args.min_identity, min_coverage=args.min_coverage,
        test_fraction=args.test_fraction, validation_fraction=args.validation_fraction,
        sizes=tuple((s, getattr(args, "ss_%s_size" % s)) for s in data.SPLITS))
    gb1_params = data.Gb1Params(
        seed=args.seed, sizes=tuple((s, getattr(args, "gb1_%s_size" % s)) for s in data.SPLITS))
    manifest = data.prepare(args.output_dir, ss_params, gb1_params, args.dssp_json, args.gb1_csv)
    ss = manifest["secondary_structure"]
    print(json.dumps({"secondary_structure": {"records": ss["records"],
                                              "unique_kept": ss["unique_kept"],
                                              **ss["counts"]},
                      "gb1": manifest["gb1"]["counts"]}, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
