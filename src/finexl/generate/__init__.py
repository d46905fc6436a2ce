"""Getting images from models: diffusers pipelines (with LoRAs), the shipped tiny model,
seeded resumable generation, and fine-tuning the tiny model.

Importing this package is cheap; torch and diffusers load when a model does.
"""

from finexl.generate.finetune import FinetuneResult, finetune, load_training_data
from finexl.generate.pipelines import (
    BUILTIN_MODELS,
    LoraSpec,
    apply_loras,
    load_pipeline,
    model_id,
    parse_lora_spec,
    resolve_device,
    resolve_dtype,
)
from finexl.generate.prompts import PROMPT_SETS, load_default_prompts
from finexl.generate.run import GenerateConfig, check_config, generate, plan_jobs

__all__ = [
    "BUILTIN_MODELS",
    "PROMPT_SETS",
    "FinetuneResult",
    "GenerateConfig",
    "LoraSpec",
    "apply_loras",
    "check_config",
    "finetune",
    "generate",
    "load_default_prompts",
    "load_pipeline",
    "load_training_data",
    "model_id",
    "parse_lora_spec",
    "plan_jobs",
    "resolve_device",
    "resolve_dtype",
]
