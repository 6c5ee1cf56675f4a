"""Downstream probes: what a pretrained encoder's frozen embeddings know about proteins.

`probes.data` prepares the probe sets from data files inside installed wheels (secondary structure
from sidechainnet's DSSP annotations, GB1 fitness from mavenn), `probes.prepare` is its command,
`probes.linear` holds the probes and their bootstrap intervals, `probes.run` is the harness and
`probes.study` the miniature pretraining study. Embeddings come from `models.embed` only.
"""
