"""The U-Net and its training."""
