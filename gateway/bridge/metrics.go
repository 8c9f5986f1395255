package bridge

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sockets      prometheus.Gauge
	framesIn     *prometheus.CounterVec
	objectsOut   prometheus.Counter
	errors       *prometheus.CounterVec
	slowCloses   prometheus.Counter
	resumeCloses prometheus.Counter
	publishWait  prometheus.Histogram
	gapReads     prometheus.Counter
	gapsUnfilled prometheus.Counter
	catchUps     prometheus.Counter
	catchUpMsgs  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sockets:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "gateway_sockets_open", Help: "Websockets open on this gateway."}),
		framesIn:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_frames_in_total", Help: "Client frames by type."}, []string{"type"}),
		objectsOut:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_objects_out_total", Help: "Server frame objects written to sockets (several may share one frame)."}),
		errors:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gateway_errors_total", Help: "Error frames and forced closes by code."}, []string{"code"}),
		slowCloses:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_slow_closes_total", Help: "Sockets closed because their send queue filled (4009)."}),
		resumeCloses: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_resume_closes_total", Help: "Sockets closed to resume (4011): a catch-up after a NATS reconnect that failed, live messages dropped under load."}),
		publishWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gateway_publish_ack_seconds", Help: "From publishing a message to the stream's ack.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		gapReads: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_live_gap_messages_total",
			Help: "Stored messages a live subscription missed (not republished to it), read from the stream and delivered."}),
		gapsUnfilled: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_live_gaps_unfilled_total",
			Help: "Gaps in live messages whose reading from the stream failed."}),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_catchups_total",
			Help: "NATS reconnects after which the sockets were given what they missed from the stream, open."}),
		catchUpMsgs: prometheus.NewCounter(prometheus.CounterOpts{Name: "gateway_catchup_deliveries_total",
			Help: "Stored messages delivered by catch-ups after NATS reconnects, per subscription."}),
	}
	reg.MustRegister(m.sockets, m.framesIn, m.objectsOut, m.errors, m.slowCloses, m.resumeCloses, m.publishWait, m.gapReads, m.gapsUnfilled, m.catchUps, m.catchUpMsgs)
	return m
}
