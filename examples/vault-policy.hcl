# The Vault (or OpenBao) policy hashroll needs to track Bank-Vaults `vault:` references.
#   bao policy write hashroll examples/vault-policy.hcl      (or: vault policy write ...)
#
# Version mode (the default): the metadata of each KV v2 path, never a value. Adjust `secret` to your mounts.
path "secret/metadata/*" {
  capabilities = ["read"]
}

# Only with --vault-key-level: the data of the current version, hashed key by key at once (never kept or
# logged), so a version changing only keys a workload does not use rolls nothing.
# path "secret/data/*" {
#   capabilities = ["read"]
# }

# KV v1 mounts have no versions: hashroll reads (and hashes) their data.
# path "kv1/*" {
#   capabilities = ["read"]
# }
