package main

import (
	"context"
	"fmt"
	"io"
	"time"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// checkpointCmd asks a node to write a checkpoint image now.
func checkpointCmd(args []string, stdout, stderr io.Writer) error {
	return adminCall("checkpoint", args, stderr, 10*time.Minute, nil, func(ctx context.Context, addr string, admin pb.AdminServiceClient) error {
		resp, err := admin.Checkpoint(ctx, &pb.CheckpointRequest{})
		if err != nil {
			return fmt.Errorf("checkpoint of %s: %w", addr, err)
		}
		if resp.GetSkipped() {
			_, err = fmt.Fprintf(stdout, "nothing committed since the image at LSN %d (%s); no checkpoint written\n", resp.GetLsn(), resp.GetFile())
			return err
		}
		_, err = fmt.Fprintf(stdout, "checkpoint at LSN %d: %s, %d rows, %d bytes in %s; %d log segments released\n",
			resp.GetLsn(), resp.GetFile(), resp.GetRows(), resp.GetBytes(), resp.GetDuration().AsDuration().Round(time.Millisecond), resp.GetReleasedSegments())
		return err
	})
}
