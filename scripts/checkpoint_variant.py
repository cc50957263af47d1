"""A checkpoint with other inference settings and the same weights, for ablations of what
happens at inference only (masked restoration passes, the anatomy disagreement term).

    python scripts/checkpoint_variant.py IN.safetensors OUT.safetensors --set model.restoration_passes=4 \
        [--set scoring.disagreement=0.5 ...]

Scoring settings that IN predates keep the values it was calibrated with, not today's defaults
(``dal.engine.config.SCORING_BEFORE_SETTING``): switch them on with --set. The thresholds are
kept as calibrated for IN: they no longer hold at their false-positive rates, so compare variants
by AP, AUROC and best Dice (threshold-free), not by Dice at a threshold; or give --recalibrate, which scores the checkpoint's own validation data again under the new
settings and stores its thresholds and metrics (as `dal train` would have), with
``scoring.population`` after fitting the healthy population. Only settings that leave the weights'
shapes alone make sense (inference switches, ``preprocessing.register``). The training record is kept.
"""
import argparse
from pathlib import Path

import yaml

from dal.engine.checkpoint import load_checkpoint, save_checkpoint
from dal.engine.config import Config, checkpoint_scoring
from dal.engine.train import calibrate
from dal.models import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--recalibrate", action="store_true",
                        help="compute the thresholds and validation metrics again under the new settings")
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.source)
    overrides = {}
    for setting in args.settings:
        key, _, value = setting.partition("=")
        overrides[key] = yaml.safe_load(value)
    # Settings the checkpoint predates stay as it was calibrated, not today's defaults.
    config = Config.from_dict({**checkpoint.config, "scoring": checkpoint_scoring(checkpoint.config)}).replace(overrides)
    model = build_model(config.model, config.loss, config.preprocessing.shape)
    model.load_state_dict(checkpoint.model.state_dict())
    thresholds, metrics, population = checkpoint.thresholds, checkpoint.metrics, checkpoint.population
    if config.scoring.population and population is None and not args.recalibrate:
        parser.error("scoring.population on a checkpoint without population maps: give --recalibrate to fit them")
    if population is not None and not args.recalibrate and any(k.startswith(("scoring.", "model.")) for k in overrides):
        print("warning: the population's maps were fitted under the checkpoint's settings; give --recalibrate to fit "
              "them again under the new ones")
    if args.recalibrate:
        metrics, thresholds, population = calibrate(model, config)
        print(f"recalibrated: validation AP {metrics['ap']:.3f} (was {checkpoint.metrics.get('ap')}), thresholds {thresholds}")
    training = {key: value for key, value in (checkpoint.training or {}).items() if key != "state"} or None
    save_checkpoint(args.target, model, model_kind=checkpoint.model_kind, config=config.to_dict(),
                    preprocessing=config.preprocessing.to_dict(), thresholds=thresholds, training=training,
                    population=population if config.scoring.population else None,
                    metrics={**metrics, "variant_of": Path(args.source).name, "variant": args.settings})
    print(f"wrote {args.target}: {args.source} with {', '.join(args.settings) or 'nothing changed'}")


if __name__ == "__main__":
    main()
