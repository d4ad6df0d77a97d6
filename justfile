# Recipes delegate to ./dev, which installs what is missing first.

default: run

# launch the TUI on the configured (default: embedded) model
run *ARGS:
    ./dev run {{ARGS}}

# lint + full test suite
test *ARGS:
    ./dev test {{ARGS}}

# slow tests too (crash loops, training)
test-slow:
    ./dev test -m "slow or not slow"

lint:
    ./dev lint

format:
    ./dev sh ruff format .

# run a benchmark: python -m bench.NAME (store, engine, tui, train, risk, gpu, gpu_profile)
bench NAME="store" *ARGS:
    ./dev bench {{NAME}} {{ARGS}}

# the TUI in a browser on localhost
serve *ARGS:
    ./dev serve {{ARGS}}
