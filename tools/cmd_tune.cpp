// fp4moe tune (placeholder until written)
