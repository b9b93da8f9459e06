"""TRL + PEFT + DeepSpeed SFT recipes on ImageNet-Think."""
