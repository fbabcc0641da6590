"""repro: a reproduction of NetVLAD (Arandjelovic et al., CVPR 2016).

Layout, in the order data flows:
    repro.data      datasets (Pittsburgh dbStruct, Tokyo 24/7, VPR-Bench,
                    the synthetic city), ground truth, image loading
    repro.model     base network, NetVLAD, f_max, PCA whitening
    repro.loss      the weakly supervised triplet ranking loss (Eq. 7)
    repro.metrics   recall@N
    repro.evaluate  descriptor extraction and evaluation of a model
"""
__version__ = "0.1.0"
