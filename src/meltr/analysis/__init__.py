"""The paper's analyses (Fig. 3 and Fig. 4 of MELTR) and the plots of a run."""
