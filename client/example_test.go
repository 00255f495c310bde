package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/mmdb/mmdb/client"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// The README's client snippet.
func Example() {
	c, err := client.New(client.Options{Addrs: []string{"127.0.0.1:7700"}})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	lsn, err := c.Upsert(ctx, "kv", client.Uint64(1), client.String("hello"))
	if err != nil {
		log.Fatal(err)
	}
	row, found, err := c.Get(ctx, "kv", client.Uint64(1))
	fmt.Println(lsn, found, row.String(1), err)

	// A read-modify-write, retried automatically on ABORTED.
	_, err = c.Tx(ctx, func(tx *client.Tx) error {
		r, _, err := tx.Get("kv", client.Uint64(1))
		if err != nil {
			return err
		}
		return tx.Update("kv", []*pb.Value{client.Uint64(1)}, client.Set{Column: "v", Value: client.String(r.String(1) + "!")})
	})
	if err != nil {
		log.Fatal(err)
	}
}
