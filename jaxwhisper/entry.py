"""What every `python ENTRY.py --config FILE --workdir DIR` script shares: its flags, logging,
joining a multi-host cluster, and validating the config into the schema of `jaxwhisper.config`.

    FLAGS = entry.define_flags("distillation config file", "run directory")
    def run(cfg: TrainConfig, workdir: Path): ...
    if __name__ == "__main__":
        entry.main(TrainConfig, run, log_level=logging.INFO)

A config that does not validate ends the script with one line naming the key, exit status 2;
a ValueError or OSError of the run (bad input: a data spec, a file, an unwritable --workdir)
one line naming the input and the cause, exit status 1 (`JAXWHISPER_TRACEBACK=1`: traceback).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from jaxwhisper import distributed
from jaxwhisper.config import ConfigError, load
from jaxwhisper.data.preflight import check_output_dir
from jaxwhisper.data.validation import DataError
from jaxwhisper.errors import USER_ERRORS, one_line, show_traceback

DISTRIBUTED_HELP = (
    "join a multi-host cluster first (jaxwhisper/distributed.py: TPU pods, SLURM and Open MPI "
    "auto-detect; else JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)"
)


def use_compilation_cache() -> Optional[Path]:
    """Turns on JAX's persistent compilation cache in the user's cache folder
    (`$XDG_CACHE_HOME` or `~/.cache`, then `jaxwhisper/jax`) and returns it; None where the
    user chose (`JAX_COMPILATION_CACHE_DIR`, empty for none) or the folder cannot be made.

    A process compiles its decoders and steps afresh, seconds each on CPU (the tiny.en
    decoder: about 5 s before the first transcript); with the cache a later run with the
    same shapes reads them from disk. JAX keys an entry by the program, the compile options
    and the backend, and stores only programs that took over a second to compile.
    """
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return None
    import jax

    path = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxwhisper" / "jax"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # no cache rather than a warning at every compilation
        logging.getLogger(__name__).info("no compilation cache: %s", one_line(e))
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def define_flags(config_help: str, workdir_help: str) -> flags.FlagValues:
    """Defines --config (a `configs/*.py` file, `--config.key=value` overrides), --workdir and
    --distributed; returns absl's FLAGS."""
    config_flags.DEFINE_config_file("config", None, config_help, lock_config=True)
    flags.DEFINE_string("workdir", None, workdir_help)
    flags.DEFINE_bool("distributed", False, DISTRIBUTED_HELP)
    flags.mark_flags_as_required(["config", "workdir"])
    return flags.FLAGS


def main(schema: type, run: Callable, log_level: int = logging.INFO) -> None:
    """Parses the flags, sets up logging and the cluster, validates the config into `schema`
    and calls `run(cfg, workdir)`."""

    def _main(argv):
        del argv
        logging.basicConfig(level=log_level, format="%(levelname)s %(name)s: %(message)s")
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file operation at INFO
        try:
            cfg = load(schema, flags.FLAGS.config.to_dict())
        except ConfigError as e:
            print(f"{Path(sys.argv[0]).name}: config error: {e}", file=sys.stderr)
            sys.exit(2)
        except OSError as e:  # a --config file that does not load (ml_collections defers it)
            cause = [ln.strip() for ln in str(e).splitlines() if ln.strip()][-1]
            print(f"{Path(sys.argv[0]).name}: config error: --config: {cause}", file=sys.stderr)
            sys.exit(2)
        if flags.FLAGS.distributed:
            distributed.initialize()
        use_compilation_cache()
        try:
            workdir = check_output_dir(flags.FLAGS.workdir, (), "--workdir")  # before any model loads
            run(cfg, workdir)
        except (*USER_ERRORS, DataError) as e:
            # Bad input (a data spec, a file, too much unusable data) is one line; the
            # traceback is for JAXWHISPER_TRACEBACK=1.
            if show_traceback():
                raise
            print(f"{Path(sys.argv[0]).name}: error: {one_line(e)}", file=sys.stderr)
            sys.exit(1)

    app.run(_main, flags_parser=_parse_flags)


def _flag_error(e: flags.Error) -> str:
    """absl's message for a flag that does not parse, in one line: the flag, then the cause,
    which ml_collections puts on the last line after a traceback (a ValueError of the config
    file's `get_config`, a missing file)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if len(lines) == 1:
        return lines[0]
    flag = lines[0].split(": ")[0].removeprefix("flag ")
    return f"{flag}: {re.sub(r'^[A-Za-z_.]*(Error|Exception): ', '', lines[-1])}"


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, but a flag that does not parse (a bad `--config FILE:ARG`, which absl
    prints with ml_collections' traceback) and an override of a key the config lacks
    (`--config.x.y=...`, an AttributeError with a traceback) end in one line, exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"{Path(argv[0]).name}: config error: {_flag_error(e)}", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError) as e:
        detail = str(e).replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
        detail = " ".join(detail.strip("'\"").split())
        print(
            f"{Path(argv[0]).name}: config error: unknown config key on the command line: {detail}",
            file=sys.stderr,
        )
        sys.exit(2)
