with

transactions as (

    select * from {{ ref('stg_bronze__transactions') }}

),

deduplicated as (

    -- keep the first copy ingested: ingestion order is (ingested_at, partition, offset)
    select
        *,
        count(*) over (partition by transaction_id) as delivery_count

    from transactions

    qualify row_number() over (
        partition by transaction_id
        order by ingested_at, kafka_partition, kafka_offset
    ) = 1

)

select * from deduplicated
