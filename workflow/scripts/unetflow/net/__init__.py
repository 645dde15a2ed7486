"""The U-Net and how it is applied to a whole image: the network of training, planning and prediction alike."""
