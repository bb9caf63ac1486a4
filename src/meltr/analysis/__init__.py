"""The paper's analyses (Fig. 3 and Fig. 4 of MELTR), the plots of a run, and linear probes of what an embedding
knows (`meltr.analysis.probe`)."""
