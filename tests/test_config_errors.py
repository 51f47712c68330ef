"""Malformed configs stop when the config is read, before any job, with one line naming the field.

Each case is a ``--config`` override of the embedded default (or a paper spec written beside it) and a
piece of the message it must produce. Every case goes through ``poisonlab.config.resolve``, the function
the Snakefile's ``resolve_config`` calls; the first few also through a real ``snakemake`` run in a scratch
copy of the project, which must fail without starting a job or writing under data/ or results/.
"""

from __future__ import annotations

import shutil

import pytest
import yaml

from helpers import ROOT, snakemake
from poisonlab.config import load_scaled, merge, resolve, typed
from poisonlab.registry import ConfigError

# (override as --config takes it, what the one-line message must say: the field first, then what is allowed)
CASES = [
    # the four of the issue: option values, a dataset fact, a recipe's type, a numbered name
    ("poison_options={ar: {mnist5k: {epsilon: -1}}}",
     "poison_options.ar.mnist5k: poison 'ar': epsilon must be > 0; got -1"),
    ("poison_options={lsp: {mnist5k: {patch_size: 5}}}",
     "poison_options.lsp.mnist5k: poison 'lsp': patch_size must be a divisor of the image size 28x28; got 5"),
    ("recipes={embedded: {lr: abc}}", "recipes.embedded: lr must be > 0; got 'abc'"),
    ("defenses=[at-linf-0]", "defenses: unknown defense 'at-linf-0'; known defenses: at-l2, at-linf-16, at-linf-4"),
    # names
    ("archs=[resnet50]", "archs.0: 'resnet50' is not one of ['densenet121'"),
    ("poisons=[nope]", "poisons.0: 'nope' is not one of ['ar', 'ar-linf'"),
    ("evaluations=[nope]", "evaluations.0: 'nope' is not one of ['dfr', 'linsep', 'peak']"),
    ("defenses=[jpeg]", "defenses: defense 'jpeg' needs its quality in the name, e.g. 'jpeg-10'"),
    ("poison_options={ar: {mnist6k: {epsilon: 1}}}",
     "poison_options.ar: 'mnist6k' is not one of ['default', 'cifar10'"),
    ("recipe=fast", "unknown recipe 'fast'; the config defines: "),
    ("dataset=cifar10", "dataset: 'cifar10' has no entry under datasets (defined: mnist5k)"),
    # option names and values, with the values allowed
    ("poison_options={ar: {default: {eps: 1}}}",
     "poison_options.ar.mnist5k: poison 'ar' got unknown option(s) eps; allowed: epsilon, coefficients,"),
    ("poison_options={ar: {default: {coefficients: learned}}}",
     "poison 'ar': coefficients must be one of auto, published, search; got 'learned'"),
    ("poison_options={ar-linf: {mnist5k: {epsilon: 2}}}",
     "poison 'ar-linf': epsilon must be > 0 and <= 1.0; got 2"),
    ("poison_options={cuda: {mnist5k: {kernel_size: 4}}}",
     "poison 'cuda': kernel_size must be an odd integer >= 1; got 4"),
    ("poison_options={em: {mnist5k: {surrogate: alexnet}}}", "poison 'em': surrogate must be one of densenet121, "),
    ("poison_options={em: {mnist5k: {step_size: 0.5}}}",
     "poison 'em': step_size must be > 0 and <= epsilon (0.3); got 0.5"),
    ("poison_options={regions-16: {mnist5k: {epsilon: 0}}}", "poison 'regions-16': epsilon must be > 0 and <= 1.0"),
    ("defenses=[jpeg-0]", "defenses: defense 'jpeg-0': quality must be an integer in 1..100; got 0"),
    ("defense_options={ueraser: {default: {plasma_p: 1.5}}}",
     "defense_options.ueraser.mnist5k: defense 'ueraser': plasma_p must be > 0 and <= 1.0; got 1.5"),
    ("defense_options={at-linf-8: {default: {epsilon: 4}}}",
     "defense 'at-linf-8': epsilon must be > 0 and <= 1.0; got 4"),
    ("defense_options={blur: {default: {kernel_size: 2}}}", "defense 'blur': kernel_size must be an odd integer >= 3"),
    ("evaluation_options={dfr: {default: {method: ridge}}}",
     "evaluation 'dfr': method must be one of lbfgs, logistic; got 'ridge'"),
    ("evaluation_options={linsep: {mnist5k: {steps: 1.5}}}", "evaluation 'linsep': steps must be an integer >= 1"),
    ("recipes={embedded: {optimizer: lion}}",
     "recipes.embedded: optimizer must be one of adam, adamw, sgd; got 'lion'"),
    ("recipes={embedded: {batch_size: 0}}", "recipes.embedded: batch_size must be an integer >= 1; got 0"),
    ("recipes={embedded: {label_smoothing: 1}}", "recipes.embedded: label_smoothing must be >= 0 and < 1; got 1"),
    ("recipes={embedded: {augment: {crop: {pad: 4}}}}", "got unknown option(s) pad; allowed: padding"),
    # types and ranges the schema checks
    ("seeds=[-1]", "seeds.0: -1 is less than the minimum of 0"),
    ("seeds=zero", "seeds: 'zero' is not of type 'array'"),
    ("resources={train: {runtime: 0, mem_mb: 1000}}", "resources.train.runtime: 0 is less than the minimum of 1"),
    ("device=tpu", "device: 'tpu' does not match"),
    ("keep_weights_every=0", "keep_weights_every: 0 is less than the minimum of 1"),
    ("runs_per_gpu=0", "runs_per_gpu: 0 is less than the minimum of 1"),
    # datasets: loader options and subsets
    ("datasets={mnist5k: {colour: red}}", "datasets.mnist5k: dataset 'mnist5k' got unknown option(s) colour"),
    ("datasets={mnist5k: {subset: {train: 0, test: 10}}}", "datasets.mnist5k.subset.train: 0 is less than the minimum"),
    ("datasets={imagenet100: {image_size: 0}}", "dataset 'imagenet100': image_size must be an integer >= 1; got 0"),
    # paths and paper specs
    ("paths={cache: x}", "paths: Additional properties are not allowed ('cache' was unexpected)"),
    ("paths={data: [a, b]}", "paths.data: ['a', 'b'] is not of type 'string'"),
    ("papers=[nope]", "papers: unknown paper 'nope'; known papers: "),
    ("tables=[baseline]", "tables: unknown table 'baseline'; config/papers/baselines.yaml has: baselines,"),
    ("papers=[bad-spec]", "papers/bad-spec: table t has no 'metric'"),  # a spec file lacking a key (bad_spec)
    ("papers=[bad-axis]", "unknown axis 'colour'"),  # a spec file with an unknown axis (bad_spec)
]
# Through a real snakemake too: the four, a schema error and a paper spec error.
THROUGH_SNAKEMAKE = {0, 1, 2, 3, 4, len(CASES) - 2}

BAD_SPECS = {
    "bad-spec": {"tables": {"t": {"rows": {"axis": "poison", "values": ["clean"]},
                                  "columns": {"axis": "defense", "values": ["none"]}}}},
    "bad-axis": {"tables": {"t": {"metric": "final_test_acc", "rows": {"axis": "colour", "values": ["red"]},
                                  "columns": {"axis": "defense", "values": ["none"]}}}},
}


def parse_override(override: str) -> dict:
    """``key=value`` as ``--config`` reads it (YAML for the value; typed() numbers the nested strings)."""
    key, _, value = override.partition("=")
    return {key: yaml.safe_load(value)}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """config/ of the project with the two malformed paper specs beside the real ones."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "config", root / "config")
    for slug, spec in BAD_SPECS.items():
        (root / "config" / "papers" / f"{slug}.yaml").write_text(yaml.safe_dump(spec))
    return root


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case[0] for case in CASES])
def test_a_malformed_config_stops_with_one_line_naming_its_field(index, project, tmp_path, monkeypatch):
    override, message = CASES[index]
    monkeypatch.chdir(tmp_path)  # anything written by mistake lands here, and is looked for below
    config = merge(load_scaled(project / "config" / "config.yaml"), parse_override(override))
    with pytest.raises(ConfigError) as raised:
        resolve(typed(config), project)
    text = str(raised.value)
    assert message in text and "\n" not in text, text
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def test_the_good_config_resolves(project):
    config = load_scaled(project / "config" / "config.yaml")
    assert "baselines" in resolve(config, project)


@pytest.mark.parametrize("index", sorted(THROUGH_SNAKEMAKE), ids=[CASES[i][0] for i in sorted(THROUGH_SNAKEMAKE)])
def test_snakemake_stops_before_any_job(index, scratch_repo, workflow_env):
    override, message = CASES[index]
    for slug, spec in BAD_SPECS.items():
        (scratch_repo / "config" / "papers" / f"{slug}.yaml").write_text(yaml.safe_dump(spec))
    # Not a dry run: a config that passed would start jobs, and they would write data/ and results/.
    result = snakemake(scratch_repo, "--profile", "local", "all_tables", "--config", override, env=workflow_env,
                       check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"config: {message}" in output, output[-3000:]
    assert "Traceback" not in output and "rule " not in output  # one line, and no job listed or started
    assert not (scratch_repo / "data").exists() and not (scratch_repo / "results").exists()
