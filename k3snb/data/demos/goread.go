// k3snb static Go reader: prints the contents of each file argument, like runc reading /proc/sys.
package main

import (
	"fmt"
	"os"
)

func main() {
	code := 0
	for _, p := range os.Args[1:] {
		b, err := os.ReadFile(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
			continue
		}
		fmt.Print(string(b))
	}
	os.Exit(code)
}
