/** What the cluster's JetStream key-value buckets have in common. */

/**
 * A `create` of a key that exists, or an `update` from a revision that is no longer the
 * latest: the compare-and-set lost to another writer, which is an answer, not an outage.
 */
export function isRevisionConflict(error: unknown): boolean {
  return /wrong last sequence|exists/i.test(String(error));
}
