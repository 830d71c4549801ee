# Headshots: make setup, make demo, make test. See README.md.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= sdxl
RUN ?= default
# STYLES (make infer: e.g. linkedin,actor) and N (images per style; make more: variations): empty leaves them to
# the config (configs/base.yaml, then the person's data/users/<user>/settings.yaml)
STYLES ?=
N ?=
ARGS ?=

# Development checkouts sit beside ../shared, which holds FaceNet weights for machines without
# internet; elsewhere facenet-pytorch downloads `casia-webface` at first use.
SHARED_FACE_WEIGHTS := $(wildcard ../shared/models/facenet/casia-webface-features.pt)
ifneq ($(SHARED_FACE_WEIGHTS),)
export HEADSHOTS_FACE_WEIGHTS ?= $(abspath $(SHARED_FACE_WEIGHTS))
endif

TINY_MODEL := models/tiny-sdxl
# Values given on make's command line are taken as typed: make would expand a `$` in them, so `USER='jo$hn'` worked
# on jo's data and `$(shell ...)` ran. (ARGS is left to the shell, which splits it into words.)
GIVEN := $(foreach v,USER RUN PROFILE STYLES N IMAGE IMAGES USERS ADDRESS ALL PORT,$(if $(filter command line,$(origin $(v))),$(v)))
$(foreach v,$(GIVEN),$(eval override $(v) := $$(value $(v))))
# Whose photos: USER given on make's command line (make train USER=alice), never the shell's own USER (your login
# name), so a forgotten USER= cannot train on, or purge, someone's data by accident. Quoted for the shell as given:
# a name with a space or a quote reaches the CLI whole, which refuses it saying why.
PERSON := $(if $(filter USER,$(GIVEN)),$(USER))
# The commands themselves see your login as USER, as your shell does: make would export USER=alice to them, and
# libraries name files after it (torch names its compile cache torchinductor_alice, in the temp folder), which make purge cannot find.
ifneq ($(PERSON),)
override USER := $(or $(shell id -un 2>/dev/null),$(LOGNAME))
export USER
endif
shell_quote = '$(subst ','\'',$(1))'
COMMON = --user=$(call shell_quote,$(PERSON)) --profile $(call shell_quote,$(PROFILE)) $(call shell_quote,run=$(RUN))

.PHONY: app account batch setup lock demo test test-all lint intake prepare train infer more discard export recover purge tiny-model bench face-eval help check-user

help:
	@echo "make setup | lock | demo | test | test-all | lint | bench"
	@echo "make intake | prepare | train USER=name [PROFILE=tiny] [RUN=name] [ARGS='key=value ...']"
	@echo "make infer USER=name [STYLES=linkedin,actor] [N=8]      make more USER=name IMAGE=file [N=4]"
	@echo "make discard USER=name IMAGES=a.png,b.png              make export USER=name [IMAGES=a.png]"
	@echo "make recover USER=name [RUN=name] (a broken or lost samples/manifest.json)"
	@echo "make purge USER=name [ALL=1: their photos too]            make batch USERS=a,b [ADDRESS=auto]"
	@echo "make app [PROFILE=tiny] [PORT=8000]                      make face-eval CFP=... WILD=... [WEIGHTS=...] [NAME=...]"
	@echo "make account USER=name [PASSWORDS=accounts.txt] (a web-app password, stored as its hash)"

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

# Every package of the environment is pinned in requirements.lock (made by `make lock` with uv);
# setup installs exactly that. A pinned version of one package, read from the lock:
LOCK := requirements.lock
pin = $(shell sed -n 's/^$(1)==\([^ ;]*\).*/\1/p' $(LOCK))

# A first setup takes ~6.2 GiB of the disk: asked for up front (scripts/setup_space.py), not found short half-way.
SETUP_GIB ?= 6.5
setup: $(BIN)/python
	@$(PY) scripts/setup_space.py $(VENV) --needed-gib $(SETUP_GIB)
	@# torch + torchvision first, with pip: it takes the local wheels where a machine has them (uv would
	@# download ~3 GB of CUDA build); pinned from the lock, so the next step leaves them as they are.
	$(BIN)/pip install torch==$(call pin,torch) torchvision==$(call pin,torchvision) uv==$(call pin,uv)
	@# --compile-bytecode: uv writes no .pyc by default, leaving each process to compile what it imports; where
	@# Python may not write them (PYTHONDONTWRITEBYTECODE, common in containers) every process did, each time:
	@# 1.35x as long to import the training stack, 1.5x the web app's (scripts/bench_startup.py, docs/benchmarks.md).
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -r $(LOCK)
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@# facenet-pytorch's own pins (torch<2.3, numpy<2) cannot be met beside torch 2.14: --no-deps (see the file).
	$(BIN)/pip install --no-deps -r requirements-nodeps.txt
	@# CI only: headless Chromium for the browser tests (tests/browser.py: the web app, the gallery, intake.html; they skip without it).
	@if [ -n "$$CI" ] && ! command -v chromium >/dev/null; then \
		{ apt-get update && apt-get install -y chromium; } >/dev/null 2>&1 \
		|| { sudo -n apt-get update && sudo -n apt-get install -y chromium; } >/dev/null 2>&1 \
		|| echo "note: could not install chromium; the browser tests will be skipped"; \
	fi
	@$(BIN)/python -c "from headshots.logs import setup_logging; setup_logging(); import torch, diffusers, peft, accelerate, facenet_pytorch; print('setup ok: torch', torch.__version__, '| cuda' if torch.cuda.is_available() else '| cpu only')"

# Re-resolve requirements.lock after changing a range in pyproject.toml (keeps every other pin);
# `make lock ARGS=--upgrade` moves every package to the newest version the ranges allow.
# Then `make setup && make test` before committing the new lock.
lock: $(BIN)/python
	@test -x $(BIN)/uv || $(BIN)/pip install uv
	$(BIN)/uv pip compile pyproject.toml --all-extras --universal --python-version 3.11 \
		--custom-compile-command "make lock" -o $(LOCK) $(ARGS)

$(TINY_MODEL)/model_index.json:
	$(BIN)/python -m headshots.tiny_sdxl $(TINY_MODEL)

tiny-model: $(TINY_MODEL)/model_index.json

# The whole pipeline on the tiny profile and the shipped sample selfies (under a minute on 2 idle CPU cores). Its 3 usable
# photos are fewer than a real set needs (intake.min_photos, 5): the demo lowers that minimum for itself.
demo: tiny-model
	@# the login's alone, as everything the commands make (umask 077): data/users/ lists the people's names
	@umask 077 && mkdir -p data/users/demo/selfies && { cp -n data/samples/demo/*.jpg data/users/demo/selfies/ 2>/dev/null || true; }
	$(BIN)/python -m train all --user demo --profile tiny intake.min_photos=3 $(ARGS)
	$(BIN)/python -m infer all --user demo --profile tiny intake.min_photos=3 infer.styles=[linkedin,executive,actor] $(ARGS)
	@echo "demo done: open outputs/demo/default/samples/gallery.html"

# The default suite, in pytest-xdist workers; a file's tests stay in one worker (their module fixtures, a Ray batch or
# a web app, are built once), the longest files first (tests/conftest.py: LONGEST_FILES; --no-loadscope-reorder keeps
# that order). On 2 idle cores 511-625 s (2026-12-07; 694-751 s before `setup` compiled bytecode), against 1060 s in
# one process.
# TEST_WORKERS=auto: one per core, at most 6, and at most one per 3 GiB of memory available (each builds its own tiny
# model and holds up to ~2.5 GiB: a many-core machine with little memory would otherwise run out); =0: in this process.
TEST_WORKERS ?= auto
WORKERS = $(if $(filter auto,$(TEST_WORKERS)),$(shell $(BIN)/python -c "import os, psutil; cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(); print(max(1, min(cores, 6, int(psutil.virtual_memory().available / 3 / 2**30))))" 2>/dev/null),$(TEST_WORKERS))
test:
	@$(BIN)/python -c "import xdist" 2>/dev/null || { echo "error: pytest-xdist is not installed (make test runs through it): make setup installs requirements.lock"; exit 2; }
	$(BIN)/python -m pytest -m "not slow" -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(ARGS)

# In this process: the full-size SDXL test alone takes ~21 GiB of RAM.
test-all:
	$(BIN)/python -m pytest $(ARGS)

# ruff, at the version in the lock (its default rules: pyflakes, pycodestyle errors, pyupgrade and more).
lint:
	$(BIN)/ruff check .

# The commands that take USER= (check-user first): its error names the one typed
PERSON_COMMANDS := intake prepare train infer more discard export recover purge account
check-user:
	@test -n $(call shell_quote,$(PERSON)) || { echo "error: say whose photos on the command line, e.g. make $(firstword $(filter $(PERSON_COMMANDS),$(MAKECMDGOALS)) train) USER=alice"; exit 2; }

intake: check-user
	$(BIN)/python -m train intake $(COMMON) $(ARGS)

prepare: check-user $(if $(filter tiny,$(PROFILE)),tiny-model)
	$(BIN)/python -m train prepare $(COMMON) $(ARGS)

train: check-user $(if $(filter tiny,$(PROFILE)),tiny-model)
	$(BIN)/python -m train all $(COMMON) $(ARGS)

infer: check-user $(if $(filter tiny,$(PROFILE)),tiny-model)
	$(BIN)/python -m infer all $(COMMON) $(if $(STYLES),$(call shell_quote,infer.styles=[$(STYLES)])) $(if $(N),$(call shell_quote,infer.images_per_style=$(N))) $(ARGS)

# More like one generated image you like (a file in outputs/<user>/<run>/samples/): N variations, then scored.
IMAGE ?=
more: check-user $(if $(filter tiny,$(PROFILE)),tiny-model)
	$(BIN)/python -m infer more $(COMMON) $(call shell_quote,infer.more.image=$(IMAGE)) $(if $(N),$(call shell_quote,infer.more.count=$(N))) $(ARGS)

# Many people at once on Ray (embedded on this machine unless ADDRESS=auto or ray://head:10001).
USERS ?=
ADDRESS ?=
batch: $(if $(filter tiny,$(PROFILE)),tiny-model)
	@test -n $(call shell_quote,$(USERS)) || { echo "error: say whose photos, e.g. make batch USERS=alice,bob"; exit 2; }
	$(BIN)/python -m service.batch --users=$(call shell_quote,$(USERS)) --profile $(call shell_quote,$(PROFILE))$(if $(ADDRESS), --address=$(call shell_quote,$(ADDRESS))) $(ARGS)

# The web app on 127.0.0.1:7860, or PORT (prints the URL); ARGS e.g. train.max_steps=500, --password-file F --host H.
PORT ?=
app: $(if $(filter tiny,$(PROFILE)),tiny-model)
	$(BIN)/python -m service.app --profile $(call shell_quote,$(PROFILE))$(if $(PORT), --port=$(call shell_quote,$(PORT))) $(ARGS)

# A web-app account for --password-file: asks for USER's password, stores its hash in PASSWORDS (made if missing).
PASSWORDS ?= accounts.txt
account: check-user
	$(BIN)/python -m service.accounts --password-file $(call shell_quote,$(PASSWORDS)) --add-account $(call shell_quote,$(PERSON))

# Delete generated images for good (files in outputs/<user>/<run>/samples/, comma-separated), then score the rest.
IMAGES ?=
discard: check-user
	$(BIN)/python -m infer discard $(COMMON) $(call shell_quote,infer.discard_files=[$(IMAGES)]) $(ARGS)

# Crops for LinkedIn, a 4:5 portrait and a CV (outputs/<user>/<run>/export/): of IMAGES when given, else of the
# favourites ticked in the web app, else of every kept image.
export: check-user
	$(BIN)/python -m infer export $(COMMON) $(if $(IMAGES),$(call shell_quote,infer.export_files=[$(IMAGES)])) $(ARGS)

# Rebuild outputs/<user>/<run>/samples/manifest.json from the images' own entries (broken, lost, or missing some), then score.
recover: check-user
	$(BIN)/python -m infer recover $(COMMON) $(ARGS)

# ALL=1 deletes the photos too, and only from make's command line (as USER): never an ALL left in your shell.
# ALL=0 keeps them, as leaving it out does; any other value is refused rather than guessed.
PURGE_ALL := $(if $(filter ALL,$(GIVEN)),$(ALL))
purge: check-user
	@test -z "$(filter RUN,$(GIVEN))" || { person=$(call shell_quote,$(PERSON)) run=$(call shell_quote,$(RUN)); \
		echo "error: make purge deletes every run of $$person, not one (RUN=$$run is not used, nothing was deleted)"; \
		echo "  -> all of $$person's runs: make purge USER=$$(printf %q "$$person") (ALL=1: the photos too); only this run:" \
			"rm -r $$(printf %q "outputs/$$person/$$run")"; exit 2; }
	@all=$(call shell_quote,$(PURGE_ALL)); case "$$all" in ''|0|1) ;; *) echo "error: ALL=1 deletes the photos too, ALL=0 (or no ALL) keeps them; not ALL=$$all"; exit 2;; esac
	$(BIN)/python -m service.purge --user=$(call shell_quote,$(PERSON)) $(if $(filter 1,$(PURGE_ALL)),--include-selfies) $(ARGS)

# Face verification on public datasets outside the repository (how to get them: scripts/face_measure.py).
# One CPU thread: ~35 min to measure, seconds to report. CFP=.../cfp-dataset WILD=.../celeba299
# WEIGHTS: the weights measured, a file or a facenet-pytorch name (default: the CASIA-WebFace ones); NAME: the name
# their threshold is recorded under (default: the weights' own name).
WEIGHTS ?=
FACE_EVAL_WEIGHTS = $(or $(WEIGHTS),$(HEADSHOTS_FACE_WEIGHTS),casia-webface)
face-eval:
	@test -n "$(CFP)" -a -n "$(WILD)" || { echo "usage: make face-eval CFP=<cfp-dataset folder> WILD=<identity folders> [WEIGHTS=<file or vggface2>] [NAME=<record name>]"; exit 2; }
	OMP_NUM_THREADS=1 $(BIN)/python scripts/face_measure.py --cfp $(CFP) --wild $(WILD) --weights $(FACE_EVAL_WEIGHTS) \
		--margins 0,14,32 --wild-margins 14,32 --per-identity 6 --out outputs/face-measured.pt
	OMP_NUM_THREADS=1 $(BIN)/python scripts/face_similarity_eval.py --measured outputs/face-measured.pt --cfp $(CFP) --wild $(WILD) \
		--write-calibration $(or $(NAME),$(if $(WEIGHTS),$(basename $(notdir $(WEIGHTS))),casia-webface))

bench:
	$(BIN)/python scripts/bench_scoring.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_generate.py
	$(BIN)/python scripts/bench_detail.py
	$(BIN)/python scripts/bench_batch.py
	$(BIN)/python scripts/bench_startup.py
