#!/bin/sh
# Money transfers across partitions without two-phase commit (issue 21; docs/derived-streams.md,
# "A ledger"). Needs a running server: `logbook serve` (add LOGBOOK_TOKEN=$(cat data/admin.token)
# when authentication is on). Run it again on the same server and it appends nothing twice
# (the imports' request ids) and creates nothing twice (the same specs answer "exists").
#
#   transfers ──(transfer_requests: key_by from)──▶ ledger ◀──┐
#                                                     │       │ credit instructions
#                                                     ├─(accounts: "ledger": true)
#                                                     └─(transfer_outcomes: key_by id)──▶ outcomes
#
# Environment: LOGBOOK (the binary, default `logbook`), ACCOUNTS (200), TRANSFERS (20000),
# SEED (1: the same seed makes the same transfers).
set -eu
LOGBOOK=${LOGBOOK:-logbook}
ACCOUNTS=${ACCOUNTS:-200}
TRANSFERS=${TRANSFERS:-20000}
SEED=${SEED:-1}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Opening balances: 1,000.00 in cents on every account; transfers of 0.01 to 600.00 between
# random accounts, so that some run the payer dry and are rejected.
awk -v n="$ACCOUNTS" 'BEGIN { for (i = 0; i < n; i++)
  printf "{\"type\":\"deposit\",\"account\":\"acct-%04d\",\"delta\":100000}\n", i }' \
  > "$work/deposits.jsonl"
awk -v n="$TRANSFERS" -v a="$ACCOUNTS" -v seed="$SEED" 'BEGIN { srand(seed);
  for (i = 0; i < n; i++)
    printf "{\"id\":\"tr-%s-%06d\",\"from\":\"acct-%04d\",\"to\":\"acct-%04d\",\"amount\":%d}\n",
      seed, i, int(rand() * a), int(rand() * a), 1 + int(rand() * 60000) }' \
  > "$work/transfers.jsonl"

"$LOGBOOK" stream create transfers --partitions 4
"$LOGBOOK" stream create ledger --partitions 8
"$LOGBOOK" stream create outcomes --partitions 4
"$LOGBOOK" import ledger "$work/deposits.jsonl" --key account

# 1. Each transfer request, keyed by its payer, into the payer's ledger partition.
"$LOGBOOK" derived create transfer_requests --spec \
  '{"source":"transfers","target":"ledger","key_by":["from"]}'
# 2. The account processor: per ledger partition, in offset order, debit (no overdraft) or
#    reject; a debit sends a credit instruction into the payee's partition, applied there.
"$LOGBOOK" derived create accounts --spec '{"source":"ledger","target":"ledger","ledger":true}'
# Balances and outcomes are views over the ledger.
"$LOGBOOK" view create balances --spec '{"source":"ledger","kind":"aggregate",
  "semantics":"events","filter":{"field":"delta","op":"is_not_null"},"group_by":["account"],
  "aggregates":{"balance":{"fn":"sum","field":"delta"}}}'
"$LOGBOOK" view create outcomes --spec '{"source":"ledger","kind":"aggregate",
  "semantics":"events","filter":{"or":[{"field":"type","op":"eq","value":"credited"},
  {"field":"type","op":"eq","value":"rejected"}]},"group_by":["type"],
  "aggregates":{"transfers":{"fn":"count"},"amount":{"fn":"sum","field":"delta"}}}'
# 3. Each transfer's outcome keyed by its id (a table view over them answers "what became
#    of transfer X"; the ledger is keyed by account, so a view there would keep each
#    account's latest record only).
"$LOGBOOK" derived create transfer_outcomes --spec '{"source":"ledger","target":"outcomes",
  "filter":{"or":[{"field":"type","op":"eq","value":"credited"},
  {"field":"type","op":"eq","value":"rejected"}]},"key_by":["id"]}'
"$LOGBOOK" view create outcome_by_id --spec '{"source":"outcomes","kind":"table"}'

"$LOGBOOK" import transfers "$work/transfers.jsonl" --key id
"$LOGBOOK" derived status transfer_requests --wait --timeout-ms 600000 > /dev/null
"$LOGBOOK" derived status accounts --wait --timeout-ms 600000 > /dev/null
"$LOGBOOK" derived status transfer_outcomes --wait --timeout-ms 600000 > /dev/null
for v in balances outcomes outcome_by_id; do
  "$LOGBOOK" view status "$v" --wait --timeout-ms 600000 > /dev/null
done

echo "outcomes (credited = done, rejected = insufficient funds or to itself):"
"$LOGBOOK" view scan outcomes
echo "the first balances (cents):"
"$LOGBOOK" view scan balances --limit 5
echo "one transfer's outcome:"
"$LOGBOOK" view get outcome_by_id "tr-$SEED-000000"
