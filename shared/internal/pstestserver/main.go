// Command pstestserver serves Google's in-process Pub/Sub fake (pstest) on a
// TCP address, as the fallback emulator when the Cloud SDK's Pub/Sub
// emulator is not installed. It lacks push delivery, retry back-off and
// exactly-once semantics, and is slow per stream: never benchmark through it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"cloud.google.com/go/pubsub/v2/pstest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8085", "host:port to listen on (loopback)")
	flag.Parse()
	if err := run(*addr); err != nil {
		log.Fatalf("pstestserver: %v", err)
	}
}

func run(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("address %q: %w", addr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := pstest.NewServerWithAddress(addr)
	log.Printf("pstest Pub/Sub fake listening on %s", srv.Addr)
	<-ctx.Done()
	return srv.Close()
}
