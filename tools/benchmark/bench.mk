# Benchmark targets; the main Makefile does `include tools/benchmark/bench.mk`.
# Standalone: make -f tools/benchmark/bench.mk bench IMAGES=200
#
#   make bench                      IMAGES=2000 seeded JPEGs, ceiling, every conf/NN-*.yaml, predict_batch_udf
#   make bench IMAGES=500 PROFILES='conf/01-baseline.yaml conf/05-model-optimisation.yaml'
#   make bench-large                IMAGES=10000, LARGE_PROFILES (conf/08) only: start-up amortised (opt-in, not in CI)
#   make report                     reports/latest/ from the newest reports/runs/<bench_id>/
#   make bench-scale SIZES='100000 300000'   catalogue scale on synthetic ledgers (opt-in, not in CI)
#   make bench-startup              IMAGES=10000: this tree vs STARTUP_BASELINE vs Daft (make peer-tools), alternated
IMAGES ?= 2000
PROFILES ?=
BENCH_CORES ?= 2
BENCH_FLAGS ?=
BENCH_STRICT ?=
BENCH_PY ?= $(or $(PY),.venv/bin/python)

LARGE_IMAGES ?= 10000
LARGE_PROFILES ?= conf/08-warm-start.yaml

# The commit before the start-up work of issue 20 (driver-side manifest read, no dedup shuffle).
STARTUP_BASELINE ?= 2a61f2c^
STARTUP_ROUNDS ?= 3
# Daft, the peer bench-startup compares with: not a dependency of the job, so kept out of .venv. Its wheel
# asks for pyarrow<26; the run reads and writes plain Parquet, which the locked pyarrow 26 does.
DAFT_VERSION ?= 0.7.26
PEER_SITE ?= .peer-site

SIZES ?=
SCALE_DATA ?=
SCALE_FLAGS ?=

.PHONY: bench report sweep bench-heads bench-large bench-similar bench-scale bench-startup peer-tools

bench: ## Benchmark: seeded data set, single-process ceiling, every conf/NN-*.yaml + predict_batch_udf on local[2] (IMAGES=2000, PROFILES=...)
	$(BENCH_PY) -m tools.benchmark.runner --images $(IMAGES) --cores $(BENCH_CORES) \
	  $(if $(strip $(PROFILES)),--profiles $(PROFILES)) $(BENCH_FLAGS)

bench-large: ## One end-to-end run at LARGE_IMAGES=10000 of LARGE_PROFILES (start-up amortised), with its ceiling; make report shows it beside IMAGES
	$(BENCH_PY) -m tools.benchmark.runner --images $(LARGE_IMAGES) --cores $(BENCH_CORES) --profiles $(LARGE_PROFILES) \
	  --no-reference --no-scaling --label large $(BENCH_FLAGS)

bench-startup: ## Whole process at LARGE_IMAGES=10000, profile 08: this tree vs STARTUP_BASELINE vs Daft, alternated STARTUP_ROUNDS times; reports/startup-ab.json
	$(BENCH_PY) -m tools.benchmark.startup_ab --images $(LARGE_IMAGES) --cores $(BENCH_CORES) --baseline '$(STARTUP_BASELINE)' \
	  --rounds $(STARTUP_ROUNDS) --peer-site $(PEER_SITE) $(if $(strip $(LARGE_PROFILES)),--profile $(firstword $(LARGE_PROFILES)))

peer-tools: ## Daft (DAFT_VERSION) into PEER_SITE, for bench-startup's peer run only
	$(BENCH_PY) -m pip --disable-pip-version-check install -q --no-deps --target $(PEER_SITE) daft==$(DAFT_VERSION)

report: ## Report of the newest bench run: reports/latest/README.md, PNG plots, summary.json (BENCH_STRICT=1 fails on a missed target)
	$(BENCH_PY) -m tools.benchmark.report $(if $(BENCH_STRICT),--strict)

sweep: ## Measure the 03 profile's Spark parameters one at a time (IMAGES=500); table in reports/sweep.md
	$(BENCH_PY) -m tools.benchmark.sweep --images $(or $(SWEEP_IMAGES),500)

bench-heads: ## A head added to a tagged catalogue: full pass vs heads on stored embeddings, same run (IMAGES=2000); reports/heads-only.json
	$(BENCH_PY) -m tools.benchmark.heads_only --images $(IMAGES) --cores $(BENCH_CORES)

# BLAS threads = BENCH_CORES: the matrix products run on the cores a 2-core executor would have.
bench-similar: ## Similar images: IVF recall@10 vs brute force, time and memory at 10k/50k/200k vectors, incremental vs full; reports/similar.json
	OMP_NUM_THREADS=$(BENCH_CORES) OPENBLAS_NUM_THREADS=$(BENCH_CORES) MKL_NUM_THREADS=$(BENCH_CORES) \
	  $(BENCH_PY) -m tools.benchmark.similar --cores $(BENCH_CORES) $(SIMILAR_FLAGS)

# Opt-in, not in CI: minutes to hours, and GBs of synthetic data under SCALE_DATA (outside the repository).
bench-scale: ## What grows with the catalogue: --incremental no-op, 1% new, a head on 1%, the current view on synthetic ledgers of SIZES rows; reports/scale.json (SIZES: default 1M, 3M, 10M, ~45 min on 2 cores)
	$(BENCH_PY) -m tools.benchmark.scale $(if $(strip $(SIZES)),--sizes $(SIZES)) --cores $(BENCH_CORES) $(if $(SCALE_DATA),--data $(SCALE_DATA)) $(SCALE_FLAGS)
