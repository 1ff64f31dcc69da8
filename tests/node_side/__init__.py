"""What a node does for a VMI's virt-launcher pod, shared by the fake cluster (tests/fake_cluster,
which still plays KubeVirt versions the test bed cannot build) and the test bed's node agent
(tests/testbed/node_agent.py, node_kubelet.py): the VM a VMI asks for (``vmi_guest``), the pod's
DNS (``pod_dns``), exec, port-forward and logs into the VM's lab (``pod_streams``, ``lab_exec``),
and the API's Status errors, conditions and timestamps (``errors``, ``conditions``)."""
