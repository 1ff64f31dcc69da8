"""How the Kubernetes API shows what it answers: ``Status`` errors (``errors``), conditions and
timestamps (``conditions``); shared by the fake cluster (tests/fake_cluster) and the test bed's
node agent (tests/testbed)."""
