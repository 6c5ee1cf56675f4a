# Two entry points for a fresh machine (see README.md):
#   make demo   set up, then run the main job on the bundled sample
#   make test   set up, then run the test suite
# Others: make demo-profile, make rehearse, make probe-data, make study, make bench (see README.md).
PYTHON ?= python3
SAMPLE ?= tests/data/uniref50_sample.fasta.gz
OUT ?= out/sample
SETUP_STAMP := .setup-stamp

.PHONY: setup demo demo-profile test bench rehearse probe-data study

# Re-runs pip only when a requirements file changed since the last successful set-up.
$(SETUP_STAMP): requirements.txt requirements-nodeps.txt requirements-t5x.txt
	$(PYTHON) -m pip install -r requirements.txt
	$(PYTHON) -m pip install --no-deps -r requirements-nodeps.txt
	@$(PYTHON) -c 'import t5x' 2>/dev/null \
	  || $(PYTHON) -m pip install --no-deps -r requirements-t5x.txt \
	  || echo 'WARNING: t5x could not be installed (see requirements-t5x.txt); training is unavailable and the T5X tests will skip.'
	@command -v mmseqs >/dev/null && command -v seqkit >/dev/null \
	  || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	       && (apt-get update -qq && apt-get install -y -qq mmseqs2 seqkit) ; } \
	  || echo 'WARNING: mmseqs2/seqkit not installed (apt-get install mmseqs2 seqkit); decontamination and the seqkit benchmark are unavailable.'
	touch $(SETUP_STAMP)

setup: $(SETUP_STAMP)

demo: setup
	PYTHON=$(PYTHON) SAMPLE=$(SAMPLE) OUT=$(OUT) bash scripts/run_sample.sh

# Profile prediction: alignments -> profiles -> the tiny model on the Ankh3 + profile mixture
# -> t5x.eval (profile KL, argmax agreement) -> loss curves with the profile KL.
demo-profile: setup
	PYTHON=$(PYTHON) bash scripts/run_profile_demo.sh

test: setup
	$(PYTHON) -m pytest -q tests

# Partitioned training on 8 simulated devices, per-host input, memory per chip, cache identity.
rehearse: setup
	$(PYTHON) -m scripts.rehearse --out=out/rehearse

# Each benchmark prints its figures as ratios against a baseline run in the same script.
# The pipeline and decontamination benchmarks build their inputs from the 20,000 real UniProtKB
# entries of Debian's mmseqs2-examples.
bench: setup
	@[ -f /usr/share/doc/mmseqs2/example-data/DB.fasta.gz ] || apt-get install -y -qq mmseqs2-examples \
	  || echo 'WARNING: apt-get install mmseqs2-examples failed; bench_pipeline/bench_decontamination need its DB.fasta.gz (--source=PATH).'
	$(PYTHON) bench/bench_pipeline.py
	$(PYTHON) bench/bench_tasks.py
	$(PYTHON) bench/bench_network.py
	$(PYTHON) bench/bench_decontamination.py
	$(PYTHON) bench/bench_embed.py
	@{ command -v hmmbuild >/dev/null && [ -d /usr/share/doc/hmmer/examples ]; } \
	  || apt-get install -y -qq hmmer hmmer-examples \
	  || echo 'WARNING: apt-get install hmmer hmmer-examples failed; bench_profiles needs the hmmbuild baseline and its Pfam alignments.'
	$(PYTHON) bench/bench_profiles.py

# Probe sets from the installed sidechainnet and mavenn wheels (docs/probes.md).
probe-data: setup
	$(PYTHON) -m probes.prepare --output_dir=out/probe_data

# The miniature pretraining study (docs/study.md): probe data, corpus, training of every arm,
# evaluation, probes, table and PNG, under out/study. STUDY_STEPS: training steps of every arm.
STUDY_STEPS ?= 1000
study: setup
	@[ -f /usr/share/doc/mmseqs2/example-data/DB.fasta.gz ] || apt-get install -y -qq mmseqs2-examples
	$(PYTHON) -m probes.study --output_dir=out/study --train_steps=$(STUDY_STEPS)
