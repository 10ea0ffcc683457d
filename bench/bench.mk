# The benchmark harness; included by the main Makefile. See docs/performance.md for the method.
#   make bench        full run (about 10 minutes), rewrites the results in docs/performance.md
#   make bench-quick  under a minute, prints the budgets against the floor and the peer
#   BENCH_ARGS="--rounds 6 --no-litellm"  passes options to bench/run.py (see its --help)
#   make bench-scheduler  seconds, in process: what model-aware scheduling adds per request
BENCH_ARGS ?=

.PHONY: bench bench-quick bench-setup bench-scheduler

bench-setup:
	@bench/setup.sh

bench: $(STAMP) bench-setup
	$(BIN)/python bench/run.py --write-docs $(BENCH_ARGS)

bench-quick: $(STAMP) bench-setup
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

bench-scheduler: $(STAMP)
	$(BIN)/python bench/scheduler.py
