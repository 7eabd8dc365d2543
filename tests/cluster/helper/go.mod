// Small stdlib-only jobs for tests/cluster/up (certificates, kubeconfigs, ports, waiting).
module hashroll.test/cluster/helper

go 1.26.0
