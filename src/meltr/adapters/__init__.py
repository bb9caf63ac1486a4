"""Parameter-efficient fine-tuning of the backbones: MSTA and its consistency constraint ``L_CC``.

peft-like usage::

    model = build_backbone("univl", size="tiny", vocab_size=tokenizer.vocab_size)
    frozen = copy.deepcopy(model)
    inject_msta(model, MSTAConfig(bottleneck_dim=8, first_block=-1))    # the backbone is frozen
    print(trainable_parameters(model))
    task = ConsistencyTask(model, frozen, tokenizer)                    # {backbone tasks} + {"consistency"}
    save_adapter(model, "msta.pt"); load_adapter(fresh_model, "msta.pt")

Adapters register in :data:`ADAPTERS` (``ADAPTERS.build("msta", model, **config)``): ``msta``, ``adaptformer``
(a small module of meltr, as peft has none) and ``lora``, peft's own (an optional dependency imported only when
called: ``pip install 'meltr[peft]'``). They go where the backbone declares (``adapter_sites``,
:mod:`meltr.adapters.layouts`). ``meltr.recipes.base_to_novel`` is the base-to-novel experiment of "Efficient
Transfer Learning for Video-language Foundation Models" (``meltr adapt``).
"""

from meltr.adapters.adaptformer import AdaptFormerConfig, AdaptMLP, inject_adaptformer
from meltr.adapters.base import (
    ADAPTERS,
    AdaptedBlock,
    AdapterMergeError,
    TrainableParameters,
    adapted_blocks,
    adapter_disabled,
    adapter_layers,
    adapter_parameter_names,
    adapter_state_dict,
    backbone_state_dict,
    disable_adapter,
    enable_adapter,
    load_adapter,
    merge_adapter,
    save_adapter,
    trainable_parameters,
    unload_adapter,
    unmerge_adapter,
)
from meltr.adapters.consistency import (
    PROMPT_TEMPLATE,
    WORLD_DESCRIPTIONS,
    ClassDescriptions,
    ConsistencyTask,
    class_descriptions,
    class_name,
    class_prompts,
    consistency_loss,
)
from meltr.adapters.layouts import AdapterSite, TokenLayout, TokenLayouts, adapter_sites
from meltr.adapters.lora import (
    LORA_ADAPTER_NAME,
    LoRAConfig,
    inject_lora,
    lora_parameter_names,
    lora_target_names,
    require_peft,
)
from meltr.adapters.msta import MSTA, MSTAConfig, inject_msta, msta_config_help

__all__ = [
    "ADAPTERS",
    "LORA_ADAPTER_NAME",
    "MSTA",
    "PROMPT_TEMPLATE",
    "WORLD_DESCRIPTIONS",
    "AdaptFormerConfig",
    "AdaptMLP",
    "AdaptedBlock",
    "AdapterMergeError",
    "AdapterSite",
    "ClassDescriptions",
    "ConsistencyTask",
    "LoRAConfig",
    "MSTAConfig",
    "TokenLayout",
    "TokenLayouts",
    "TrainableParameters",
    "adapted_blocks",
    "adapter_disabled",
    "adapter_layers",
    "adapter_parameter_names",
    "adapter_sites",
    "adapter_state_dict",
    "backbone_state_dict",
    "class_descriptions",
    "class_name",
    "class_prompts",
    "consistency_loss",
    "disable_adapter",
    "enable_adapter",
    "inject_adaptformer",
    "inject_lora",
    "inject_msta",
    "load_adapter",
    "lora_parameter_names",
    "lora_target_names",
    "merge_adapter",
    "msta_config_help",
    "require_peft",
    "save_adapter",
    "trainable_parameters",
    "unload_adapter",
    "unmerge_adapter",
]
