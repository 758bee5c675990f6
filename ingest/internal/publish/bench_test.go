package publish

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/startdeliver/segment-destination/shared/cputime"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// instantRPC answers every Publish at once, so a benchmark through it
// measures the publisher's own cost: queueing, batching, waking waiters.
type instantRPC struct{}

func (instantRPC) Publish(_ context.Context, req *pubsubpb.PublishRequest, _ ...gax.CallOption) (*pubsubpb.PublishResponse, error) {
	ids := make([]string, countMessages(req))
	for i := range ids {
		ids[i] = "id"
	}
	return &pubsubpb.PublishResponse{MessageIds: ids}, nil
}

// countMessages counts the messages of req as Pub/Sub would read them, in
// req.Messages and among the fields sent pre-encoded, without decoding
// them.
func countMessages(req *pubsubpb.PublishRequest) int {
	n := len(req.Messages)
	for b := []byte(req.ProtoReflect().GetUnknown()); len(b) > 0; {
		num, typ, l := protowire.ConsumeField(b)
		if l < 0 {
			panic(protowire.ParseError(l))
		}
		if num == fieldRequestMessages && typ == protowire.BytesType {
			n++
		}
		b = b[l:]
	}
	return n
}

// BenchmarkPublish publishes ~1 KB envelopes from 64 concurrent callers
// (as ingest's handlers do under load), an ordering key per person out of
// 5,000 (or 8), each caller waiting for its confirmation. "instant" is the
// publisher alone; "pstest" goes through the real client library and gRPC
// to Google's in-process fake (whose CPU is in the same process). It
// reports messages per Publish call and the process's CPU time per message
// (cpu-ns/op), which on a shared machine says more than the wall time.
// Compare two builds in one run (docs/benchmarks.md), never against a
// figure from another run.
func BenchmarkPublish(b *testing.B) {
	data := make([]byte, 1000)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	run := func(b *testing.B, p *Publisher, people int64) {
		var n atomic.Int64
		b.SetParallelism(32) // 64 callers on 2 cores
		b.ReportAllocs()
		cpu0 := cputime.Process()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				i := n.Add(1)
				m := &envelope.Encoded{Data: data, OrderingKey: fmt.Sprint("person-", i%people),
					Attributes: map[string]string{envelope.AttrMessageID: fmt.Sprint("m-", i), "type": "track"}}
				if _, err := p.Publish(context.Background(), m); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64((cputime.Process()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		p.Stop()
		if st := p.Stats(); st.Calls > 0 {
			b.ReportMetric(float64(st.Messages)/float64(st.Calls), "msgs/call")
		}
	}
	b.Run("instant", func(b *testing.B) {
		run(b, newPublisher(instantRPC{}, "projects/p/topics/t", Options{}), 5000)
	})
	pstestRun := func(b *testing.B, people int64) {
		srv := pstest.NewServerWithAddress("127.0.0.1:0")
		defer srv.Close()
		ctx := context.Background()
		client, err := pubsub.NewClient(ctx, "p", option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
			option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
		if err != nil {
			b.Fatal(err)
		}
		defer client.Close()
		if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/p/topics/t"}); err != nil {
			b.Fatal(err)
		}
		run(b, New(client, "p", "t", Options{}), people)
	}
	b.Run("pstest", func(b *testing.B) { pstestRun(b, 5000) })
	// Few people, many events each (a mobile app's batches): a person's
	// events queue behind the call that carries their key.
	b.Run("pstest-8people", func(b *testing.B) { pstestRun(b, 8) })
}

// BenchmarkRequestEncoding is the cost of a Publish request's bytes for 92
// messages of ~1.5 KB with ingest's four attributes (a call at 256
// connections, docs/benchmarks.md), against the same request marshalled by
// protobuf-go from its Messages field in the same run ("x-baseline" is the
// ratio): what gRPC's codec does with each, a size then the bytes.
func BenchmarkRequestEncoding(b *testing.B) {
	data := make([]byte, 1500)
	batch := make([]outgoing, 92)
	for i := range batch {
		o := outgoing{data: data, attrs: map[string]string{
			envelope.AttrVersion: "2", envelope.AttrType: "track",
			envelope.AttrAccountID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			envelope.AttrMessageID: fmt.Sprintf("3f2a9c1e-7b4d-4e8a-9f00-%012d", i)}}
		o.size = messageSize(o)
		batch[i] = o
	}
	marshal := func(b *testing.B, req *pubsubpb.PublishRequest) {
		buf := make([]byte, 0, proto.Size(req))
		if _, err := (proto.MarshalOptions{}).MarshalAppend(buf, req); err != nil {
			b.Fatal(err)
		}
	}
	var base float64
	b.Run("baseline-messages-field", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			msgs := make([]*pubsubpb.PubsubMessage, len(batch))
			for i, o := range batch {
				msgs[i] = &pubsubpb.PubsubMessage{Data: o.data, Attributes: o.attrs}
			}
			marshal(b, &pubsubpb.PublishRequest{Topic: "projects/p/topics/t", Messages: msgs})
		}
		base = float64(b.Elapsed().Nanoseconds()) / float64(b.N*len(batch))
		b.ReportMetric(base, "ns/message")
	})
	b.Run("pre-encoded", func(b *testing.B) {
		b.ReportAllocs()
		var fields []byte
		for b.Loop() {
			fields = fields[:0]
			for _, o := range batch {
				fields = appendMessageField(fields, o)
			}
			req := &pubsubpb.PublishRequest{Topic: "projects/p/topics/t"}
			req.ProtoReflect().SetUnknown(fields)
			marshal(b, req)
		}
		per := float64(b.Elapsed().Nanoseconds()) / float64(b.N*len(batch))
		b.ReportMetric(per, "ns/message")
		if base > 0 {
			b.ReportMetric(per/base, "x-baseline")
		}
	})
}
