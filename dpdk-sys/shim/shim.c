#include "shim.h"

int bh_rte_errno(void) { return rte_errno; }

uint16_t bh_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                         uint16_t nb_pkts) {
    return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t bh_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                         uint16_t nb_pkts) {
    return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *bh_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
void bh_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
uint8_t *bh_pktmbuf_append(struct rte_mbuf *m, uint16_t len) {
    return (uint8_t *)rte_pktmbuf_append(m, len);
}

unsigned bh_lcore_id(void) { return rte_lcore_id(); }
uint64_t bh_get_tsc_cycles(void) { return rte_get_tsc_cycles(); }
uint64_t bh_get_tsc_hz(void) { return rte_get_tsc_hz(); }
const char *bh_version(void) { return rte_version(); }
